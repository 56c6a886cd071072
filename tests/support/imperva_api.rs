//! A server playing Imperva's log repository (the Cloud WAF log integration API) for the pull
//! connector's tests: `GET <base>/logs.index` and `GET <base>/<name>` with Basic auth, files
//! that are not ready yet (404), a busy index (429 with `Retry-After`), and a count of GETs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The repository: files in index order, and how it answers.
#[derive(Default)]
pub struct Repo {
    pub files: Vec<(String, Vec<u8>)>,
    /// Listed but 404 for this many more GETs (`usize::MAX`: never served).
    pub not_ready: HashMap<String, usize>,
    /// Index GETs still to answer 429 with `Retry-After: 1`.
    pub busy: usize,
    /// GETs per path.
    pub gets: HashMap<String, usize>,
    pub auth: String,
}

pub type Shared = Arc<Mutex<Repo>>;

async fn answer(repo: &Shared, head: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let auth = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization").then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let mut r = repo.lock().unwrap();
    *r.gets.entry(path.clone()).or_default() += 1;
    if auth != r.auth {
        return (401, vec![], b"unauthorized".to_vec());
    }
    let name = path.rsplit('/').next().unwrap_or("").to_string();
    if name == "logs.index" {
        if r.busy > 0 {
            r.busy -= 1;
            return (429, vec![("Retry-After".into(), "1".into())], vec![]);
        }
        let index: String = r.files.iter().map(|(n, _)| format!("{n}\n")).collect();
        return (200, vec![], index.into_bytes());
    }
    if let Some(left) = r.not_ready.get_mut(&name) {
        if *left > 0 {
            *left = left.saturating_sub(if *left == usize::MAX { 0 } else { 1 });
            return (404, vec![], vec![]);
        }
    }
    match r.files.iter().find(|(n, _)| *n == name) {
        Some((_, body)) => (200, vec![], body.clone()),
        None => (404, vec![], vec![]),
    }
}

async fn serve(listener: tokio::net::TcpListener, repo: Shared) {
    while let Ok((mut s, _)) = listener.accept().await {
        let repo = repo.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let (status, headers, body) = answer(&repo, &head).await;
            let mut resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                resp.push_str(&format!("{k}: {v}\r\n"));
            }
            resp.push_str("\r\n");
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        });
    }
}

pub struct Server {
    pub rt: tokio::runtime::Runtime,
    pub url: String,
    pub repo: Shared,
}

/// A repository on a free 127.0.0.1 port answering to Basic `id:key`.
pub fn server(id: &str, key: &str) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let url = format!("http://{}/api/logs/2398_5678", listener.local_addr().expect("addr"));
    let repo: Shared = Arc::new(Mutex::new(Repo {
        auth: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"))
        ),
        ..Repo::default()
    }));
    rt.spawn(serve(listener, repo.clone()));
    Server { rt, url, repo }
}

impl Server {
    pub fn add(&self, name: &str, body: Vec<u8>) {
        self.repo.lock().unwrap().files.push((name.to_string(), body));
    }

    pub fn gets(&self, name: &str) -> usize {
        let r = self.repo.lock().unwrap();
        r.gets
            .iter()
            .filter(|(p, _)| p.ends_with(&format!("/{name}")))
            .map(|(_, n)| *n)
            .sum()
    }
}
