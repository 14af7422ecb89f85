//! Every name apura uses in Redis, under one prefix (the table is in [`super`]), and the check of
//! the options that name the server and the prefix.

use std::path::Path;

/// The key prefix when none is given.
pub const DEFAULT_PREFIX: &str = "apura";

/// The names of everything apura keeps in Redis, under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `apura:seq`: the global version sequence.
    pub fn sequence(&self) -> String {
        format!("{}:seq", self.prefix)
    }

    /// `apura:doc:{topic}`: the latest document of a topic.
    pub fn document(&self, topic: &str) -> String {
        format!("{}:doc:{topic}", self.prefix)
    }

    /// `apura:topics`: hash of topic → version, the snapshot index.
    pub fn topics(&self) -> String {
        format!("{}:topics", self.prefix)
    }

    /// `apura:leader`: the ingest leader lock.
    pub fn leader(&self) -> String {
        format!("{}:leader", self.prefix)
    }

    /// `apura:cycles`: the pub/sub channel of every cycle.
    pub fn cycles(&self) -> String {
        format!("{}:cycles", self.prefix)
    }

    /// `apura:audience`: hash of gateway token → its last audience report.
    pub fn audience(&self) -> String {
        format!("{}:audience", self.prefix)
    }
}

/// Every problem with a Redis URL, CA file and key prefix, reported at once.
pub fn check_options(url: &str, ca_file: Option<&Path>, prefix: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = super::Server::open(url, ca_file) {
        problems.push(format!("--redis: {e:#}"));
    }
    if prefix.is_empty() || prefix.contains(char::is_whitespace) {
        problems.push(format!(
            "--redis-prefix {prefix:?} must be non-empty, without spaces"
        ));
    }
    problems
}

/// A Redis URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let k = Keys::new("apura");
        assert_eq!(k.sequence(), "apura:seq");
        assert_eq!(
            k.document("mayors-sp-sao-paulo"),
            "apura:doc:mayors-sp-sao-paulo"
        );
        assert_eq!(k.topics(), "apura:topics");
        assert_eq!(k.leader(), "apura:leader");
        assert_eq!(k.cycles(), "apura:cycles");
        assert_eq!(Keys::new("test-7").sequence(), "test-7:seq");
    }

    #[test]
    fn options_are_checked_together_and_passwords_stay_out_of_logs() {
        assert!(check_options("redis://127.0.0.1:6379/0", None, "apura").is_empty());
        assert!(check_options("rediss://cache:6380", None, "apura").is_empty());
        assert!(check_options("redis+sentinel://s1,s2:5000/mymaster", None, "apura").is_empty());
        assert_eq!(check_options("http://nope", None, "").len(), 2);
        let missing = Path::new("/nonexistent/ca.pem");
        let problems = check_options("rediss://cache:6380", Some(missing), "apura");
        assert!(problems[0].contains("/nonexistent/ca.pem"), "{problems:?}");
        let problems = check_options("redis+sentinel://user:secret@s1/m", None, "apura");
        assert!(problems.is_empty(), "{problems:?}");
        let problems = check_options("redis+sentinel://user:secret@s1", None, "apura");
        assert!(!problems[0].contains("secret"), "{problems:?}");
        assert_eq!(
            redacted("redis://user:secret@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(redacted("redis://cache:6379"), "redis://cache:6379");
    }
}
