//! A request body that must arrive by a deadline.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a body yields once its deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyReadTimeout;

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl Error for BodyReadTimeout {}

/// True when `error`, or anything it wraps (axum's rejections wrap the
/// body's error several layers deep), is a [`BodyReadTimeout`].
pub fn is_body_timeout(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyReadTimeout>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// `inner`, failing with [`BodyReadTimeout`] once `limit` has passed since
/// it was made (when the request's head was read).
pub(crate) struct BodyDeadline<B> {
    inner: B,
    deadline: Instant,
    /// Made the first time the body is not ready, so a request whose body
    /// comes with its head, or is empty, never touches the timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> BodyDeadline<B> {
    pub(crate) fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Instant::now() + limit,
            sleep: None,
        }
    }
}

impl<B> Body for BodyDeadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_timeout_is_found() {
        let wrapped: Box<dyn Error + Send + Sync> = Box::new(BodyReadTimeout);
        let axum_error = axum::Error::new(wrapped);
        assert!(is_body_timeout(&axum_error));
        assert!(!is_body_timeout(&std::io::Error::other("reset")));
    }
}
