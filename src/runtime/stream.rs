//! The response body of a relayed stream: the runtime's native byte pipe, written chunk by chunk
//! (`STREAM_RELAY=filter`), or fed by the runtime itself from Groq's body while the relay reads a
//! copy (`STREAM_RELAY=pipe`).

use std::cell::Cell;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{select, Either};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::{futures::JsFuture, ArrayBuffer, Uint8Array};
use worker::{js_sys, web_sys, AbortController, Delay, Result};

use super::upstream::{read_chunk, FetchBody};
use crate::groq::provider::TransportError;
use crate::http::mock::EitherBody;
use crate::http::relay::{ChunkSink, PipeSink, Piped};

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// Workers' `IdentityTransformStream`, which `worker` does not wrap: bytes written to its
    /// writable side reach the response without the JS stream machinery a `TransformStream`
    /// runs for every chunk, and a fetched body piped into it is pumped by the runtime alone.
    type IdentityTransformStream;
    #[wasm_bindgen(constructor, catch)]
    fn new() -> std::result::Result<IdentityTransformStream, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn readable(this: &IdentityTransformStream) -> web_sys::ReadableStream;
    #[wasm_bindgen(method, getter)]
    fn writable(this: &IdentityTransformStream) -> web_sys::WritableStream;
}

/// A piped copy is read into a buffer this large: more than a stream brings in a batch.
const COPY_READ_BYTES: u32 = 64 << 10;

/// A pipe for a streamed answer: the readable side for the `Response`, the writer for the relay.
pub fn pipe() -> Result<(web_sys::ReadableStream, StreamWriter)> {
    let pipe = IdentityTransformStream::new()?;
    let writable = pipe.writable();
    let writer = writable.get_writer()?;
    let failed = Rc::new(Cell::new(false));
    let flag = failed.clone();
    let sink = StreamWriter {
        writable,
        writer: Some(writer),
        last_write: None,
        failed,
        on_failure: Closure::new(move |_: JsValue| flag.set(true)),
        piped: None,
    };
    Ok((pipe.readable(), sink))
}

/// Writes are queued without waiting for each to be taken (the stream keeps their order; what is
/// queued is bounded by the answer's length). A failed write (the caller went away) is caught by
/// one handler per stream and reported by the next `write`.
pub struct StreamWriter {
    writable: web_sys::WritableStream,
    /// `None` while the runtime's pipe holds the stream.
    writer: Option<web_sys::WritableStreamDefaultWriter>,
    /// The last write queued, settled once it has been taken or has failed.
    last_write: Option<js_sys::Promise>,
    failed: Rc<Cell<bool>>,
    on_failure: Closure<dyn FnMut(JsValue)>,
    piped: Option<Pipe>,
}

enum Pipe {
    /// Handed over; starts at the first `relayed`, after the writes before it.
    Ready(FetchBody),
    Running(Running),
}

/// Groq's body `tee()`d: one branch piped by the runtime into the response, the other read by
/// the relay. The runtime buffers that copy between reads.
struct Running {
    /// `pipeTo`'s promise, until it settles.
    ended: Option<JsFuture>,
    copy: web_sys::ReadableStreamByobReader,
    /// The copy's read buffer: a BYOB read takes it and hands it back with the bytes.
    buffer: Option<ArrayBuffer>,
    /// The last read filled the buffer: read again without waiting.
    full: bool,
    /// Aborts the call to Groq.
    abort: Option<AbortController>,
}

impl StreamWriter {
    /// Starts the pipe, once the writes before it have been taken (the stream takes one writer,
    /// or one pipe, at a time).
    async fn start(&mut self, body: FetchBody) -> Option<Running> {
        if let Some(last) = self.last_write.take() {
            let _ = JsFuture::from(last).await;
        }
        let (stream, abort) = body.into_pipe()?;
        let branches = stream.tee();
        let to_caller: web_sys::ReadableStream = branches.get(0).unchecked_into();
        let copy: web_sys::ReadableStream = branches.get(1).unchecked_into();
        let Ok(copy) = web_sys::ReadableStreamByobReader::new(&copy) else {
            if let Some(abort) = abort {
                abort.abort();
            }
            return None;
        };
        // Only now, with nothing left to fail: until here the writer stays ours, for the
        // router's error event and the close.
        if let Some(writer) = self.writer.take() {
            writer.release_lock();
        }
        // The stream stays open for the relay's last event; a broken body must not abort it.
        let options = web_sys::StreamPipeOptions::new();
        options.set_prevent_close(true);
        options.set_prevent_abort(true);
        let ended = JsFuture::from(to_caller.pipe_to_with_options(&self.writable, &options));
        Some(Running {
            ended: Some(ended),
            copy,
            buffer: None,
            full: false,
            abort,
        })
    }

    /// Takes the stream back from the pipe once it has ended, to write to it again.
    async fn take_back(&mut self) {
        // A pipe not started yet still waits for the writes before it.
        let running = self.piped.take_if(|p| matches!(p, Pipe::Running(_)));
        let Some(Pipe::Running(running)) = running else {
            return;
        };
        if let Some(ended) = running.ended {
            let _ = ended.await;
        }
        match self.writable.get_writer() {
            Ok(writer) => self.writer = Some(writer),
            Err(_) => self.failed.set(true),
        }
    }
}

impl ChunkSink for StreamWriter {
    async fn write(&mut self, bytes: Vec<u8>) -> std::result::Result<(), ()> {
        self.take_back().await;
        let Some(writer) = self.writer.as_ref().filter(|_| !self.failed.get()) else {
            return Err(());
        };
        let chunk = Uint8Array::from(bytes.as_slice());
        // `catch` handles the rejection, so a caller who left is no unhandled-rejection error.
        self.last_write = Some(writer.write_with_chunk(&chunk).catch(&self.on_failure));
        Ok(())
    }

    async fn close(&mut self) {
        self.take_back().await;
        // Waits for the queued writes. The caller may already have gone; closing then fails and
        // there is nothing to do.
        if let Some(writer) = &self.writer {
            let _ = JsFuture::from(writer.close()).await;
        }
    }
}

impl PipeSink<EitherBody<FetchBody>> for StreamWriter {
    fn pipe(
        &mut self,
        body: EitherBody<FetchBody>,
    ) -> std::result::Result<(), EitherBody<FetchBody>> {
        match body {
            EitherBody::Real(body) => {
                self.piped = Some(Pipe::Ready(body));
                Ok(())
            }
            mock => Err(mock),
        }
    }

    async fn relayed(&mut self, batch_ms: u64, idle_ms: u64) -> Piped {
        let mut running = match self.piped.take() {
            Some(Pipe::Running(running)) => running,
            Some(Pipe::Ready(body)) => match self.start(body).await {
                Some(running) => running,
                None => return Piped::Failed(TransportError::Connection("no body to pipe".into())),
            },
            None => return Piped::End,
        };
        let next = running.next(batch_ms, idle_ms).await;
        self.piped = Some(Pipe::Running(running));
        next
    }

    fn stop(&mut self) {
        if let Some(Pipe::Running(Running { abort, .. })) = &mut self.piped {
            if let Some(abort) = abort.take() {
                abort.abort();
            }
        }
    }
}

impl Running {
    async fn next(&mut self, batch_ms: u64, idle_ms: u64) -> Piped {
        // Let the copy fill for a batch, unless the pipe ends first.
        if let Some(ended) = self.ended.as_mut().filter(|_| !self.full && batch_ms > 0) {
            let batch = Delay::from(Duration::from_millis(batch_ms));
            if let Either::Left((result, _)) = select(ended, batch).await {
                // Said once: the pipe's promise is gone after this.
                self.ended = None;
                if result.is_err() {
                    return Piped::PipeFailed;
                }
            }
        }
        // Then all the copy holds, or what arrives first.
        let buffer = self
            .buffer
            .take()
            .unwrap_or_else(|| ArrayBuffer::new(COPY_READ_BYTES));
        let view = Uint8Array::new(&buffer);
        let read = read_chunk(self.copy.read_with_array_buffer_view(&view));
        let idle = Delay::from(Duration::from_millis(
            idle_ms.saturating_sub(batch_ms).max(1),
        ));
        match select(pin!(read), idle).await {
            // A BYOB read hands back a view of the buffer it was given.
            Either::Left((Ok(Some(bytes)), _)) => {
                let buffer = bytes.buffer();
                self.full = bytes.length() == buffer.byte_length();
                self.buffer = Some(buffer);
                Piped::Bytes(bytes.to_vec())
            }
            Either::Left((Ok(None), _)) => Piped::End,
            Either::Left((Err(e), _)) => Piped::Failed(TransportError::Connection(e.to_string())),
            Either::Right(_) => Piped::Failed(TransportError::Timeout),
        }
    }
}
