//! Connections that misbehave: many idle ones, half-open TLS (no ClientHello, or half of one),
//! requests whose headers never finish, and clients resetting in the middle of a body. Each is
//! closed or freed within the header timeout, and other clients' reviews go on meanwhile.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Waits until the server closes `stream` (end of stream or a reset), for at most `within`.
async fn closed_by_server<S: AsyncReadExt + Unpin>(mut stream: S, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// How many of `streams` the server has not closed within `within`.
async fn still_open<S: AsyncReadExt + Unpin>(
    streams: impl IntoIterator<Item = S>,
    within: Duration,
) -> usize {
    futures::future::join_all(streams.into_iter().map(|s| closed_by_server(s, within)))
        .await
        .into_iter()
        .filter(|closed| !closed)
        .count()
}

async fn review_is_answered(client: &Client) {
    let body = fixture("admission/validate-create-pod.json");
    for proto in [Proto::Http1, Proto::Http2] {
        let rsp = client.review(proto, "/validate", &body).await;
        assert_eq!(rsp["allowed"], true, "{rsp}");
    }
}

#[tokio::test]
async fn idle_half_open_and_stalled_connections_are_closed_while_reviews_go_on() {
    let server = TestServer::start(&[
        "--header-timeout",
        "1s",
        "--request-timeout",
        "1s",
        "--idle-timeout",
        "2s",
    ])
    .await;
    let client = server.client();
    let addr = server.https;
    // TCP only, no ClientHello.
    let mut silent = Vec::new();
    for _ in 0..150 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Half a ClientHello: a TLS record header announcing more than is sent.
    let mut half_hello = Vec::new();
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        half_hello.push(tcp);
    }
    // TLS done, then nothing (HTTP/1.1 and HTTP/2), or headers that never end.
    let mut idle = Vec::new();
    for i in 0..100 {
        let proto = if i % 2 == 0 {
            Proto::Http1
        } else {
            Proto::Http2
        };
        idle.push(client.connect(proto).await.unwrap());
    }
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut tls = client.connect(Proto::Http1).await.unwrap();
        tls.write_all(
            b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n",
        )
        .await
        .unwrap();
        tls.flush().await.unwrap();
        stalled.push(tls);
    }
    // 350 connections held open by one peer: others are still served.
    review_is_answered(&client).await;

    let within = Duration::from_secs(15);
    let open = still_open(silent.into_iter().chain(half_hello), within).await;
    assert_eq!(
        open, 0,
        "{open} half-open TLS connections still open after {within:?}"
    );
    // HTTP/2's preface is never sent on the idle HTTP/2 connections either.
    let open = still_open(idle, within).await;
    assert_eq!(
        open, 0,
        "{open} idle connections still open after {within:?}"
    );
    let open = still_open(stalled, within).await;
    assert_eq!(
        open, 0,
        "{open} connections with unfinished headers still open"
    );
    review_is_answered(&client).await;
}

#[tokio::test]
async fn clients_resetting_mid_body_free_their_connection_and_no_slot() {
    // One evaluation slot and a short request timeout: a leaked slot would turn the reviews
    // after the resets into 504s.
    let server = TestServer::start(&["--max-concurrent", "1", "--request-timeout", "3s"]).await;
    let client = server.client();
    let body = fixture("admission/validate-create-pod.json");
    for _ in 0..20 {
        // HTTP/1.1: headers and half the body, then a TCP reset.
        let mut tls = client.connect(Proto::Http1).await.unwrap();
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&body[..body.len() / 2]).await.unwrap();
        tls.flush().await.unwrap();
        tls.get_ref().0.set_zero_linger().unwrap();
        drop(tls);
        // HTTP/2: half the body, then RST_STREAM.
        let (response, mut upload) = open_upload(&server).await;
        send_chunk(
            &mut upload,
            &bytes::Bytes::copy_from_slice(&body[..body.len() / 2]),
            false,
        )
        .await;
        upload.send_reset(h2::Reason::CANCEL);
        drop(response);
    }
    review_is_answered(&client).await;
    let metrics = server.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "palisade_requests_total{endpoint=\"validate\",result=\"timeout\"}"
        ),
        None,
        "{metrics}"
    );
}
