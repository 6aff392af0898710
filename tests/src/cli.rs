//! The `quiver` command run as a user runs it, against one node.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::node::{quiver_binary, Node};

/// A `quiver` client command line aimed at one broker, trusting one data directory's dev
/// certificate.
pub struct Cli {
    pub broker: String,
    pub data_dir: String,
}

impl Cli {
    pub fn for_node(node: &Node) -> Self {
        Self {
            broker: node.shard_addr(0).to_string(),
            data_dir: node.data_dir.display().to_string(),
        }
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(quiver_binary());
        cmd.args(args)
            .args(["--broker", &self.broker, "--node-data-dir", &self.data_dir]);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run quiver");
        // From another thread: a command that prints while it reads would otherwise fill its
        // stdout pipe while this thread still writes its stdin.
        let writer = stdin.map(|input| {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let input = input.to_string();
            std::thread::spawn(move || {
                // A command that stops reading early closes the pipe: not this thread's error.
                let _ = pipe.write_all(input.as_bytes());
            })
        });
        let out = child.wait_with_output().expect("wait for quiver");
        if let Some(w) = writer {
            let _ = w.join();
        }
        out
    }

    /// Starts a long-running command (a `consume --follow`), stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(quiver_binary())
            .args(args)
            .args(["--broker", &self.broker, "--node-data-dir", &self.data_dir])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run quiver")
    }

    /// Starts a command that reads stdin as the test writes it (a producer fed over time).
    pub fn spawn_with_stdin(&self, args: &[&str]) -> std::process::Child {
        Command::new(quiver_binary())
            .args(args)
            .args(["--broker", &self.broker, "--node-data-dir", &self.data_dir])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run quiver")
    }

    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "quiver {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "quiver {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}
