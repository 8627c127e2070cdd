//! The response body of a relayed stream: the runtime's native byte pipe, written chunk by chunk.

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsValue;
use worker::js_sys::{futures::JsFuture, Uint8Array};
use worker::{web_sys, Result};

use crate::http::relay::ChunkSink;

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// Workers' `IdentityTransformStream`, which `worker` does not wrap: bytes written to its
    /// writable side reach the response without the JS stream machinery a `TransformStream`
    /// runs for every chunk.
    type IdentityTransformStream;
    #[wasm_bindgen(constructor, catch)]
    fn new() -> std::result::Result<IdentityTransformStream, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn readable(this: &IdentityTransformStream) -> web_sys::ReadableStream;
    #[wasm_bindgen(method, getter)]
    fn writable(this: &IdentityTransformStream) -> web_sys::WritableStream;
}

/// A pipe for a streamed answer: the readable side for the `Response`, the writer for the relay.
pub fn pipe() -> Result<(web_sys::ReadableStream, StreamWriter)> {
    let pipe = IdentityTransformStream::new()?;
    let writer = pipe.writable().get_writer()?;
    let failed = Rc::new(Cell::new(false));
    let flag = failed.clone();
    let sink = StreamWriter {
        writer,
        failed,
        on_failure: Closure::new(move |_: JsValue| flag.set(true)),
    };
    Ok((pipe.readable(), sink))
}

/// Writes are queued without waiting for each to be taken (the stream keeps their order; what is
/// queued is bounded by the answer's length). A failed write (the caller went away) is caught by
/// one handler per stream and reported by the next `write`.
pub struct StreamWriter {
    writer: web_sys::WritableStreamDefaultWriter,
    failed: Rc<Cell<bool>>,
    on_failure: Closure<dyn FnMut(JsValue)>,
}

impl ChunkSink for StreamWriter {
    async fn write(&mut self, bytes: Vec<u8>) -> std::result::Result<(), ()> {
        if self.failed.get() {
            return Err(());
        }
        let chunk = Uint8Array::from(bytes.as_slice());
        // `catch` handles the rejection, so a caller who left is no unhandled-rejection error.
        let _ = self.writer.write_with_chunk(&chunk).catch(&self.on_failure);
        Ok(())
    }

    async fn close(&mut self) {
        // Waits for the queued writes. The caller may already have gone; closing then fails and
        // there is nothing to do.
        let _ = JsFuture::from(self.writer.close()).await;
    }
}
