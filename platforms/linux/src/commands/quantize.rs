//! `memkern models quantize`: llama-quantize's output, from memkern.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use memkern_models::quantize;

use crate::cli::QuantizeArgs;

/// Quantises `args.input` into `args.output`, with a progress bar over the
/// tensors, and prints what was written.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} tensors ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("quantising to {}", args.ftype));
    let report = quantize::quantize_file(
        &args.input,
        &args.output,
        args.ftype,
        args.allow_requantize,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .with_context(|| format!("cannot quantise {} to {}", args.input.display(), args.ftype))?;
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "output": args.output,
                "type": report.ftype.name(),
                "tensors": report.tensors,
                "quantized": report.quantized,
                "bytes_in": report.bytes_in,
                "bytes_out": report.bytes_out,
                "tensor_types": report.types,
                "seconds": start.elapsed().as_secs_f64(),
            })
        );
    } else {
        let types: Vec<String> = report
            .types
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        println!(
            "wrote {} ({}, {} bytes from {}; {} of {} tensors requantised: {}) in {:.1}s",
            args.output.display(),
            report.ftype,
            report.bytes_out,
            report.bytes_in,
            report.quantized,
            report.tensors,
            types.join(", "),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
