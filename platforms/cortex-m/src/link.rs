//! The host link: COBS frames over semihosting stdin/stdout.
//!
//! It exists to turn a byte pipe into whole request frames and to send
//! response frames back; a real board would swap this for a UART or USB
//! CDC driver and keep the rest of the firmware.

use memkern_core::protocol::MAX_REQUEST_FRAME;
use semihosting::io::{Read, Stdin, Stdout, Write};

/// Why no frame came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum LinkError {
    /// The host closed the pipe: the session is over.
    Closed,
    /// A host I/O call failed.
    Io,
}

/// A framed, buffered link to the host.
pub struct Link {
    stdin: Stdin,
    stdout: Stdout,
    /// Bytes received and not yet consumed: `buf[start..end]`.
    buf: &'static mut [u8; MAX_REQUEST_FRAME],
    start: usize,
    end: usize,
    /// An overlong frame is being skipped up to its terminator.
    skipping: bool,
}

/// One received frame, or notice that one was too long and was dropped.
pub enum Frame<'a> {
    /// A complete frame (without its terminator), ready to decode in place.
    Data(&'a mut [u8]),
    /// A frame longer than the receive buffer was discarded.
    Overlong,
}

impl Link {
    /// Opens the console handles.
    pub fn open(buf: &'static mut [u8; MAX_REQUEST_FRAME]) -> Result<Self, LinkError> {
        Ok(Link {
            stdin: semihosting::io::stdin().map_err(|_| LinkError::Io)?,
            stdout: semihosting::io::stdout().map_err(|_| LinkError::Io)?,
            buf,
            start: 0,
            end: 0,
            skipping: false,
        })
    }

    /// Blocks until a whole frame has arrived.
    pub fn next_frame(&mut self) -> Result<Frame<'_>, LinkError> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end].iter().position(|&b| b == 0) {
                let (from, to) = (self.start, self.start + pos);
                self.start = to + 1;
                if self.skipping {
                    self.skipping = false;
                    return Ok(Frame::Overlong);
                }
                if from == to {
                    continue; // an empty frame: a resync marker
                }
                return Ok(Frame::Data(&mut self.buf[from..to]));
            }
            // No terminator yet: make room, then read more.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // The buffer is full of one unterminated frame.
                self.skipping = true;
                self.end = 0;
            }
            let n = self
                .stdin
                .read(&mut self.buf[self.end..])
                .map_err(|_| LinkError::Io)?;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            self.end += n;
        }
    }

    /// Sends one encoded frame (terminator included).
    pub fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        self.stdout.write_all(frame).map_err(|_| LinkError::Io)?;
        self.stdout.flush().map_err(|_| LinkError::Io)
    }
}
