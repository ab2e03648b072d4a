//! Temporary: decode speed with and without host kernels.
use memkern_models::llama::Backend;
use memkern_models::{Llm, Sampler};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mut llm = Llm::load(&path, Backend::Cpu).unwrap();
    let ids = llm.tokenizer().encode("The history of the city of Lisbon begins with").unwrap();
    for host in [false, true, false, true] {
        llm.set_host_decode(host);
        let mut s = llm.session();
        s.prefill(&ids).unwrap();
        let mut g = Sampler::greedy();
        s.step(&mut g).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..48 {
            s.step(&mut g).unwrap();
        }
        println!("host {host}: {:.1} tok/s", 48.0 / t.elapsed().as_secs_f64());
    }
}
