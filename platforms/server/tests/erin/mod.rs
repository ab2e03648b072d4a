//! The vault most server tests start from: user "erin" with one memory.

use memkern_core::governance::Principal;
use memkern_runtime::{AddRequest, ApiKey, MemoryId, Runtime};

/// What erin remembers.
pub const DANA: &str = "My sister Dana lives in Porto.";

/// Creates user "erin" in `rt` with [`DANA`] in her default cube; returns
/// her principal, her API key and the memory.
pub fn erin(rt: &Runtime) -> (Principal, ApiKey, MemoryId) {
    let (info, key) = rt.create_user(&rt.admin(), "erin").expect("user");
    let ns = rt.namespace_named(info.id, "default").expect("cube").id;
    let who = Principal::user(info.id);
    let dana = rt
        .add(
            &who,
            &AddRequest {
                namespace: ns,
                text: DANA.to_owned(),
                ..AddRequest::default()
            },
        )
        .expect("add");
    (who, key, dana.id)
}
