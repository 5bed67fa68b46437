//! A connection whose writes must make progress: a client that stops
//! reading its answer (or a long-lived event stream it no longer drains)
//! fills its socket buffer, and hyper's write then waits for ever. Here a
//! write or flush that has made no progress for the limit fails, and the
//! connection ends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub(crate) struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    /// Made the first time a write is pending and reused after that, so a
    /// connection whose writes complete at once never touches the timer.
    sleep: Option<Pin<Box<Sleep>>>,
    /// True while writes are pending without progress, and `sleep` runs.
    stalled: bool,
}

impl<S> WriteTimeout<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            sleep: None,
            stalled: false,
        }
    }

    /// What a write or flush polled: progress stops the clock; pending
    /// starts it (once) and fails the write when it runs out.
    fn timed<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        if !self.stalled {
            let deadline = Instant::now() + self.limit;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.stalled = true;
        }
        if let Some(sleep) = &mut self.sleep {
            ready!(sleep.as_mut().poll(cx));
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read none of its answer in time",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.timed(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.timed(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_write_that_makes_no_progress_fails_after_the_limit() {
        // A pipe with a 16-byte buffer that nobody reads.
        let (writer, _unread) = tokio::io::duplex(16);
        let mut conn = WriteTimeout::new(writer, LIMIT);
        conn.write_all(&[0; 16]).await.unwrap();
        let started = Instant::now();
        let stalled = conn.write_all(b"more").await;
        assert_eq!(stalled.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= LIMIT);
    }

    #[tokio::test]
    async fn progress_restarts_the_clock() {
        let (writer, mut reader) = tokio::io::duplex(4);
        let mut conn = WriteTimeout::new(writer, LIMIT);
        // Slower in all than the limit, but never stalled that long.
        let slow_reader = async {
            let mut byte = [0u8; 1];
            for _ in 0..12 {
                tokio::time::sleep(LIMIT / 3).await;
                reader.read_exact(&mut byte).await.unwrap();
            }
        };
        let (written, ()) = tokio::join!(conn.write_all(&[0; 16]), slow_reader);
        assert!(written.is_ok(), "{written:?}");
    }
}
