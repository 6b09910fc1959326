//! A `MONITOR` connection: every command a server executed, as its arguments, in the order it
//! executed them.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use redis::Connection;

use crate::server::Server;
use crate::time::{wait_until, EVENT_DEADLINE};

/// A `MONITOR` connection that records, in the order the server executed them, every
/// command it sees, as its arguments.
pub struct Monitor {
    lines: Arc<Mutex<Vec<Vec<String>>>>,
    stream: TcpStream,
}

impl Monitor {
    pub fn start(server: &Server) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect MONITOR");
        stream.write_all(b"MONITOR\r\n").expect("send MONITOR");
        let mut reader = BufReader::new(stream.try_clone().expect("clone the MONITOR stream"));
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("MONITOR reply");
        assert_eq!(ok.trim_end(), "+OK", "MONITOR replied {ok:?}");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(monitor_args(&line));
            }
        });
        Monitor { lines, stream }
    }

    /// The commands seen so far, each as its arguments (the command name in upper case).
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.lines.lock().unwrap().clone()
    }

    /// Every command the server executed before this call, in its order: sends a marker
    /// (`ECHO`) on `con` and waits (up to [`EVENT_DEADLINE`]) until the marker comes through
    /// the `MONITOR` stream; returns what came before it.
    #[track_caller]
    pub fn sync(&self, con: &mut Connection) -> Vec<Vec<String>> {
        static MARKERS: AtomicUsize = AtomicUsize::new(0);
        let marker = format!(
            "monitor-sync-{}-{}",
            process::id(),
            MARKERS.fetch_add(1, Ordering::SeqCst)
        );
        let echoed: String = redis::cmd("ECHO").arg(&marker).query(con).expect("ECHO");
        assert_eq!(echoed, marker);
        let is_marker = |c: &Vec<String>| c.len() == 2 && c[0] == "ECHO" && c[1] == marker;
        let mut seen = Vec::new();
        let arrived = wait_until(EVENT_DEADLINE, || {
            seen = self.commands();
            seen.iter().any(is_marker)
        });
        assert!(
            arrived,
            "the MONITOR stream did not show {marker} within {EVENT_DEADLINE:?}"
        );
        let at = seen.iter().position(is_marker).expect("the marker");
        seen.truncate(at);
        seen
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The quoted arguments of one `MONITOR` line (`+1700000000.1 [0 127.0.0.1:1] "GET" "k"`);
/// escapes are kept as they are (enough for the plain names used here).
fn monitor_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut rest = match line.find('"') {
        Some(at) => &line[at..],
        None => return args,
    };
    while let Some(body) = rest.strip_prefix('"') {
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else { break };
        args.push(body[..end].to_string());
        rest = body[end + 1..].trim_start();
    }
    if let Some(name) = args.first_mut() {
        *name = name.to_ascii_uppercase();
    }
    args
}
