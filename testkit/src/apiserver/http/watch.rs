//! Watches: replayed from the history, then live, with bookmarks; ended when a test drops the
//! watches, at `timeoutSeconds`, or when the reader is too slow.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Call, error};
use crate::apiserver::resources::{LEASES, NETWORK_POLICIES, in_version};
use crate::apiserver::store::{ApiError, Event};

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

/// A watch from `resourceVersion` (the current state as ADDED events without one), with
/// bookmarks when asked; 410 Expired as one ERROR event before the history kept.
pub(super) fn watch(call: &Call) -> Response {
    let (shared, target, requested, q) = (
        call.shared.clone(),
        &call.target,
        call.requested,
        &call.query,
    );
    let r = target.resource;
    let watch_line =
        move |kind: &str, object: &Value| watch_line(kind, &in_version(&requested, object.clone()));
    let ns = target.namespace.clone();
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let matches = move |e: &Event| e.resource == r && (ns.is_empty() || e.namespace == ns);
    let (backlog, mut live, mut last_rv) = {
        let store = shared.store.lock().unwrap();
        let requested = q.get("resourceVersion").cloned().unwrap_or_default();
        let live = shared.events.subscribe();
        if requested.is_empty() || requested == "0" {
            // From "any": the current state as ADDED events, then what follows.
            let backlog: Vec<Bytes> = store
                .objects
                .iter()
                .filter(|(k, _)| {
                    k.0 == r && (target.namespace.is_empty() || k.1 == target.namespace)
                })
                .map(|(_, s)| watch_line("ADDED", &s.render(&r)))
                .collect();
            (backlog, live, store.rv)
        } else {
            let Ok(from) = requested.parse::<u64>() else {
                return error(ApiError::bad_request(format!(
                    "invalid resourceVersion {requested}"
                )));
            };
            if from < store.compacted {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {from} ({})", store.compacted + 1), "reason": "Expired", "code": 410});
                let line = watch_line("ERROR", &status);
                return (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    Body::from(line),
                )
                    .into_response();
            }
            let backlog = store
                .history
                .iter()
                .filter(|e| e.rv > from && matches(e))
                .map(|e| watch_line(e.kind, &e.object))
                .collect();
            (backlog, live, store.rv.max(from))
        }
    };
    let interval = *shared.bookmark_interval.lock().unwrap();
    let mut epoch = shared.watch_epoch.subscribe();
    epoch.mark_unchanged();
    tokio::spawn(async move {
        for line in backlog {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let end = tokio::time::sleep(timeout);
        tokio::pin!(end);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut end => return,
                _ = epoch.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let mut mark = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"resourceVersion": last_rv.to_string(), "creationTimestamp": null}, "spec": {}});
                    // The zero value of the kind, as the real server sends it.
                    if r == NETWORK_POLICIES {
                        mark["spec"] = json!({"podSelector": {}});
                    }
                    if r != LEASES {
                        mark["status"] = json!({});
                    }
                    if tx.send(watch_line("BOOKMARK", &mark)).await.is_err() { return; }
                }
                event = live.recv() => match event {
                    Ok(e) => {
                        last_rv = last_rv.max(e.rv);
                        if matches(&e) && tx.send(watch_line(e.kind, &e.object)).await.is_err() {
                            return;
                        }
                    }
                    // Too slow a reader: end the watch; the client resumes from its last version.
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
