//! The HTTP front: axum handlers that parse a body ([`super::requests`]),
//! hand the work to the scheduler (generation) or to a blocking thread
//! (embeddings, encode, score), and turn the answer or the error into JSON.
//! Errors are `{"error": "..."}` with the library's message: 400 for a bad
//! request, 413 for a body over the limit, 429 (with `Retry-After`) when the
//! queue is full, 503 while draining, 504 past the request timeout, 500 for a
//! fault of ours.

use super::metrics::{Metrics, Outcome};
use super::requests;
use super::scheduler::{Event, FailKind, Job, Rejected, Scheduler};
use crate::generate::{GenerateOptions, Prompt};
use crate::tokenizer::TextStream;
use crate::{Error, T5Model, Tokenizer};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every handler shares.
pub struct AppState {
    pub model: Arc<T5Model>,
    pub tok: Option<Arc<Tokenizer>>,
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    /// The server's options under every request (limits, `exact`).
    pub base: GenerateOptions,
    pub request_timeout: Duration,
    pub model_name: String,
    /// Honour the `x-t5edge-fault` header (tests only).
    pub inject_faults: bool,
    /// `--compute-slots`: a permit for each encoder-endpoint computation.
    pub compute: Arc<tokio::sync::Semaphore>,
}

type Shared = State<Arc<AppState>>;

/// The routes, with the body limit.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/generate", post(generate))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/encode", post(encode))
        .route("/v1/score", post(score))
        .route("/v1/rerank", post(rerank))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

/// A failed request: its response, counted.
fn failed(st: &AppState, endpoint: &str, status: StatusCode, msg: &str) -> Response {
    let outcome = match status {
        StatusCode::BAD_REQUEST => Outcome::BadRequest,
        StatusCode::PAYLOAD_TOO_LARGE => Outcome::TooLarge,
        StatusCode::TOO_MANY_REQUESTS => Outcome::QueueFull,
        StatusCode::GATEWAY_TIMEOUT => Outcome::Timeout,
        StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable,
        _ => Outcome::Error,
    };
    st.metrics.request(endpoint, outcome, Duration::ZERO);
    let mut r = error(status, msg);
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    r
}

/// The status of a library error: the request's fault or ours.
fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Request(_) | Error::Tokenizer { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: POST /v1/generate, /v1/embeddings, /v1/encode, /v1/score; GET /health, /metrics",
    )
}

async fn health(State(st): Shared) -> Response {
    if st.scheduler.is_draining() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    Json(json!({ "status": "ok", "model": st.model_name })).into_response()
}

async fn metrics(State(st): Shared) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// The body limit's rejection comes before a handler runs; axum's own answer
/// is plain text, so the handlers take the body as a `Result` and answer it
/// in JSON like every other error.
type Body = Result<Bytes, axum::extract::rejection::BytesRejection>;

/// The body as UTF-8, or the status and message refusing it (413 over the
/// limit, 400 for bytes that are not UTF-8).
fn take_body(body: &Body) -> Result<&str, (StatusCode, String)> {
    match body {
        Ok(b) => std::str::from_utf8(b).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("invalid request: the body is not UTF-8: {e}"),
            )
        }),
        Err(r) => Err((r.status(), r.body_text())),
    }
}

async fn generate(State(st): Shared, headers: HeaderMap, body: Body) -> Response {
    let t0 = Instant::now();
    let text = match take_body(&body) {
        Ok(t) => t,
        Err((s, m)) => return failed(&st, "generate", s, &m),
    };
    let parsed = requests::generate(text, &st.base).and_then(|g| {
        let ids = g
            .request
            .prompt
            .ids(&st.model, st.tok.as_deref(), &g.request.options)?;
        Ok((g, ids))
    });
    let (g, ids) = match parsed {
        Ok(x) => x,
        Err(e) => return failed(&st, "generate", status_of(&e), &e.to_string()),
    };
    let opts = g.request.options;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        ids: ids.clone(),
        opts: opts.clone(),
        events: tx,
        deadline: t0 + st.request_timeout,
        stream: g.stream,
        panic_in_prefill: st.inject_faults
            && headers
                .get("x-t5edge-fault")
                .is_some_and(|v| v == "panic-prefill"),
    };
    match st.scheduler.submit(job) {
        Ok(()) => {}
        Err(Rejected::QueueFull) => {
            return failed(
                &st,
                "generate",
                StatusCode::TOO_MANY_REQUESTS,
                "the queue is full: retry later",
            )
        }
        Err(Rejected::ShuttingDown) => {
            return failed(
                &st,
                "generate",
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        }
    }
    if g.stream {
        return stream(st, rx, ids, opts, t0).into_response();
    }
    loop {
        match rx.recv().await {
            Some(Event::Token(_)) => {}
            Some(Event::Done(gen)) => {
                return match gen.to_json(&ids, st.tok.as_deref(), &opts) {
                    Ok(v) => {
                        st.metrics.request("generate", Outcome::Ok, t0.elapsed());
                        Json(v).into_response()
                    }
                    Err(e) => failed(&st, "generate", status_of(&e), &e.to_string()),
                };
            }
            Some(Event::Failed(kind, msg)) => {
                return failed(&st, "generate", fail_status(kind), &msg);
            }
            None => {
                return failed(
                    &st,
                    "generate",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the scheduler stopped",
                )
            }
        }
    }
}

fn fail_status(kind: FailKind) -> StatusCode {
    match kind {
        FailKind::Request => StatusCode::BAD_REQUEST,
        FailKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        FailKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Server-sent events: one `data: {"id", "text"}` event per token (`text`
/// the piece the decoded text grew by), then one `event: done` with the
/// whole answer (the non-streaming JSON), or one `event: error`.
fn stream(
    st: Arc<AppState>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    ids: Vec<u32>,
    opts: GenerateOptions,
    t0: Instant,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let state = Some((rx, TextStream::new()));
    let events = futures_util::stream::unfold(state, move |state| {
        let st = st.clone();
        let (ids, opts) = (ids.clone(), opts.clone());
        async move {
            let (mut rx, mut pieces) = state?;
            let ev = match rx.recv().await {
                Some(Event::Token(id)) => {
                    return match pieces.push(id, st.tok.as_deref()) {
                        Ok(p) => Some((
                            Ok(SseEvent::default().data(json!({"id": id, "text": p}).to_string())),
                            Some((rx, pieces)),
                        )),
                        Err(e) => Some((Ok(error_event(&st, &e.to_string())), None)),
                    };
                }
                Some(Event::Done(g)) => match g.to_json(&ids, st.tok.as_deref(), &opts) {
                    Ok(v) => {
                        st.metrics.request("generate", Outcome::Ok, t0.elapsed());
                        SseEvent::default().event("done").data(v.to_string())
                    }
                    Err(e) => error_event(&st, &e.to_string()),
                },
                Some(Event::Failed(kind, msg)) => {
                    let status = fail_status(kind);
                    let _ = failed(&st, "generate", status, &msg);
                    SseEvent::default()
                        .event("error")
                        .data(json!({"error": msg, "status": status.as_u16()}).to_string())
                }
                None => error_event(&st, "the scheduler stopped"),
            };
            Some((Ok(ev), None))
        }
    });
    Sse::new(events)
}

fn error_event(st: &AppState, msg: &str) -> SseEvent {
    st.metrics
        .request("generate", Outcome::Error, Duration::ZERO);
    SseEvent::default()
        .event("error")
        .data(json!({"error": msg, "status": 500}).to_string())
}

/// Runs `f` on a blocking thread once a compute slot is free, all under the
/// request timeout; a panic in it fails this request alone.
async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, (StatusCode, String)> {
    let compute = st.compute.clone();
    let task = async move {
        let permit = compute
            .acquire_owned()
            .await
            .expect("the compute semaphore is never closed");
        // The permit goes with the work: a request that times out leaves its
        // computation running, and its slot taken until that ends.
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            f()
        })
        .await
    };
    match tokio::time::timeout(st.request_timeout, task).await {
        Err(_) => Err((StatusCode::GATEWAY_TIMEOUT, "the request timed out".into())),
        Ok(Err(_)) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request's computation panicked".into(),
        )),
        Ok(Ok(Err(e))) => Err((status_of(&e), e.to_string())),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

/// A prompt's ids for the encoder endpoints, checked against the model and
/// the input limit.
fn prompt_ids(st: &AppState, p: &Prompt) -> crate::Result<Vec<u32>> {
    p.ids(&st.model, st.tok.as_deref(), &st.base)
}

async fn embeddings(State(st): Shared, body: Body) -> Response {
    let t0 = Instant::now();
    let text = match take_body(&body) {
        Ok(t) => t,
        Err((s, m)) => return failed(&st, "embeddings", s, &m),
    };
    let ids = requests::embeddings(text)
        .and_then(|r| Prompt::ids_of_all(&r.inputs, &st.model, st.tok.as_deref(), &st.base));
    let ids = match ids {
        Ok(x) => x,
        Err(e) => return failed(&st, "embeddings", status_of(&e), &e.to_string()),
    };
    let model = st.model.clone();
    let tokens: usize = ids.iter().map(|i| i.len()).sum();
    // Each input alone, as `t5edge embed --normalize` computes it.
    let r = blocking(&st, move || {
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        crate::embed::embed_each_alone(&model, &refs, true)
    })
    .await;
    match r {
        Ok(es) => {
            st.metrics.request("embeddings", Outcome::Ok, t0.elapsed());
            let data: Vec<_> = es
                .into_iter()
                .enumerate()
                .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
                .collect();
            Json(json!({
                "object": "list",
                "data": data,
                "model": st.model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }))
            .into_response()
        }
        Err((s, m)) => failed(&st, "embeddings", s, &m),
    }
}

async fn encode(State(st): Shared, body: Body) -> Response {
    let t0 = Instant::now();
    let text = match take_body(&body) {
        Ok(t) => t,
        Err((s, m)) => return failed(&st, "encode", s, &m),
    };
    let ids = match requests::encode(text).and_then(|p| prompt_ids(&st, &p)) {
        Ok(x) => x,
        Err(e) => return failed(&st, "encode", status_of(&e), &e.to_string()),
    };
    let model = st.model.clone();
    let ids2 = ids.clone();
    match blocking(&st, move || model.encode(&ids2)).await {
        Ok(states) => {
            st.metrics.request("encode", Outcome::Ok, t0.elapsed());
            let rows: Vec<&[f32]> = states.chunks_exact(st.model.config.d_model).collect();
            Json(json!({ "input_ids": ids, "states": rows })).into_response()
        }
        Err((s, m)) => failed(&st, "encode", s, &m),
    }
}

async fn score(State(st): Shared, body: Body) -> Response {
    let t0 = Instant::now();
    let text = match take_body(&body) {
        Ok(t) => t,
        Err((s, m)) => return failed(&st, "score", s, &m),
    };
    let parsed = requests::score(text).and_then(|r| {
        let (source, target) = r.ids(&st.model, st.tok.as_deref(), &st.base)?;
        if target.len() > st.base.limits.max_input_tokens {
            return Err(Error::Request(format!(
                "the target has {} tokens, above the limit of {}",
                target.len(),
                st.base.limits.max_input_tokens
            )));
        }
        Ok((source, target))
    });
    let (source, target) = match parsed {
        Ok(x) => x,
        Err(e) => return failed(&st, "score", status_of(&e), &e.to_string()),
    };
    let model = st.model.clone();
    match blocking(&st, move || crate::score::score(&model, &source, &target)).await {
        Ok(s) => {
            st.metrics.request("score", Outcome::Ok, t0.elapsed());
            Json(json!({ "token_logprobs": s.token_logprobs, "logprob": s.logprob }))
                .into_response()
        }
        Err((s, m)) => failed(&st, "score", s, &m),
    }
}

/// `POST /v1/rerank`: what `t5edge rerank --json` prints,
/// `{"results": [{"index", "score", "text"}, ...]}` best first.
async fn rerank(State(st): Shared, body: Body) -> Response {
    let t0 = Instant::now();
    let text = match take_body(&body) {
        Ok(t) => t,
        Err((s, m)) => return failed(&st, "rerank", s, &m),
    };
    let parsed = requests::rerank(text).and_then(|r| match &st.tok {
        Some(tok) => Ok((r, tok.clone())),
        None => Err(Error::Request(
            "rerank needs text: the checkpoint has no tokenizer.json".into(),
        )),
    });
    let (r, tok) = match parsed {
        Ok(x) => x,
        Err(e) => return failed(&st, "rerank", status_of(&e), &e.to_string()),
    };
    let model = st.model.clone();
    let ranked = blocking(&st, move || {
        let ranked = crate::rerank::rerank(&model, &tok, &r.query, &r.documents, &r.options)?;
        Ok(ranked
            .into_iter()
            .map(|x| json!({"index": x.index, "score": x.score, "text": r.documents[x.index]}))
            .collect::<Vec<_>>())
    })
    .await;
    match ranked {
        Ok(results) => {
            st.metrics.request("rerank", Outcome::Ok, t0.elapsed());
            Json(json!({ "results": results })).into_response()
        }
        Err((s, m)) => failed(&st, "rerank", s, &m),
    }
}
