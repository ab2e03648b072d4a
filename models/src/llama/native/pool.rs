//! The threads the native CPU kernels run on.
//!
//! Exists because a rayon parallel loop started from a thread outside the
//! pool hands its work to the pool and sleeps on a latch until it is done:
//! two context switches per matmul, hundreds per decoded token (the
//! `perf` profile showed a third of decode time in the scheduler). The
//! forward pass instead runs *inside* a pool ([`Threads::run`]), so the
//! calling thread is one of the workers, a one-thread pool runs every loop
//! inline, and a two-thread pool shares each loop with one spinning peer.

use std::sync::{Arc, OnceLock};

use crate::llama::error::LlmError;

/// A pool of worker threads for the native kernels, cheap to clone.
#[derive(Debug, Clone)]
pub struct Threads {
    pool: Arc<rayon::ThreadPool>,
}

impl Threads {
    /// A pool of `n` threads (`n ≥ 1`).
    pub fn new(n: usize) -> Result<Self, LlmError> {
        if n == 0 {
            return Err(LlmError::Backend(
                "a thread pool needs at least one thread".into(),
            ));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("memkern-cpu-{i}"))
            .build()
            .map(|pool| Self {
                pool: Arc::new(pool),
            })
            .map_err(|e| LlmError::Backend(format!("starting {n} CPU threads: {e}")))
    }

    /// The process's default pool: [`Threads::default_count`] threads.
    /// Falls back to rayon's global pool if threads cannot be started.
    pub fn shared() -> Option<&'static Self> {
        static SHARED: OnceLock<Option<Threads>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::new(Self::default_count()).ok())
            .as_ref()
    }

    /// `MEMKERN_THREADS` if set to a positive number, else one per
    /// available CPU: the size of [`Threads::shared`] and of the
    /// embedder's pool.
    pub fn default_count() -> usize {
        std::env::var("MEMKERN_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            })
    }

    /// Worker threads in the pool.
    pub fn count(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The rayon pool itself, for libraries that take one (tract's
    /// multithreaded matmuls in the embedder).
    pub fn rayon_pool(&self) -> Arc<rayon::ThreadPool> {
        Arc::clone(&self.pool)
    }

    /// Runs `f` on one of the pool's threads; parallel loops inside it are
    /// shared among the pool's threads.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}
