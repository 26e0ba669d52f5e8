//! A closed-loop load generator: `connections` kept-alive HTTP/1.1 connections, each
//! sending one `POST /` and waiting for its answer before the next, as Cortex's
//! dequeuer does. Raw sockets keep the client's own cost small and predictable.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a load run stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this many requests in all.
    Requests(u64),
    /// After this long.
    Elapsed(Duration),
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Answers with status 200.
    pub ok: u64,
    /// Other statuses and their counts.
    pub other: BTreeMap<u16, u64>,
    /// Requests without an answer (the connection is then re-opened).
    pub errors: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Latency of every answered request, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Report {
    /// Answered requests per second.
    pub fn rate(&self) -> f64 {
        (self.ok + self.other.values().sum::<u64>()) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0–1), in microseconds.
    pub fn latency_us(&self, q: f64) -> u32 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        self.latencies_us[i]
    }
}

fn exchange(stream: &mut Option<BufReader<TcpStream>>, addr: SocketAddr, request: &[u8]) -> std::io::Result<u16> {
    if stream.is_none() {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        *stream = Some(BufReader::new(s));
    }
    let reader = stream.as_mut().expect("just connected");
    reader.get_mut().write_all(request)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed in the headers"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}

/// Runs the load: `body` POSTed to `/` of `addr` with `X-Cortex-Job-ID: load`.
pub fn run(addr: SocketAddr, connections: usize, until: Until, body: &str) -> Report {
    let request = Arc::new(
        format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Cortex-Job-ID: load\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    let remaining = Arc::new(AtomicU64::new(match until {
        Until::Requests(n) => n,
        Until::Elapsed(_) => u64::MAX,
    }));
    let started = Instant::now();
    let deadline = match until {
        Until::Elapsed(d) => Some(started + d),
        Until::Requests(_) => None,
    };
    let threads: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (request, remaining) = (request.clone(), remaining.clone());
            std::thread::spawn(move || {
                let mut report = Report::default();
                let mut stream = None;
                while remaining.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let sent = Instant::now();
                    match exchange(&mut stream, addr, &request) {
                        Ok(status) => {
                            report.latencies_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            if status == 200 {
                                report.ok += 1;
                            } else {
                                *report.other.entry(status).or_default() += 1;
                            }
                        }
                        Err(_) => {
                            report.errors += 1;
                            stream = None;
                        }
                    }
                }
                report
            })
        })
        .collect();
    let mut total = Report::default();
    for thread in threads {
        let r = thread.join().expect("a load thread panicked");
        total.ok += r.ok;
        total.errors += r.errors;
        total.latencies_us.extend(r.latencies_us);
        for (status, n) in r.other {
            *total.other.entry(status).or_default() += n;
        }
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    total
}
