//! `mediabus watch`: follows `GET /api/events` (Server-Sent Events, DESIGN §10), reconnecting
//! with `Last-Event-ID` so no event is lost across a dropped connection.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Api, CliError};

/// Prints each event until interrupted (Ctrl-C). Errors: the server refuses the stream (401,
/// 404, ...); a dropped connection is retried with a growing delay (up to 30 s).
pub fn run(api: &Api, entity: Option<(String, String)>, json_out: bool) -> Result<(), CliError> {
    let mut path = "/api/events".to_owned();
    if let Some((kind, id)) = &entity {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        path.push_str(&format!("?entityType={}&entityId={}", enc(kind), enc(id)));
    }
    let url = api.url(&path);
    let mut last_id: Option<String> = None;
    let mut connected_once = false;
    let mut delay = Duration::from_millis(500);
    loop {
        let response = api.send(|agent, bearer| {
            let mut request = agent.get(&url).header("accept", "text/event-stream");
            if let Some(b) = bearer {
                request = request.header("authorization", b);
            }
            if let Some(id) = &last_id {
                request = request.header("last-event-id", id);
            }
            request.call()
        });
        let mut response = match response {
            Ok(r) => r,
            // Once a stream has been open, a failure is the server going away for a while:
            // keep trying. A first connection that fails is an error to report.
            Err(e) if connected_once => {
                eprintln!("mediabus: {e}; retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(e) => return Err(e),
        };
        if !response.status().is_success() {
            return Err(CliError::from_response("events", &mut response));
        }
        delay = Duration::from_millis(500);
        connected_once = true;
        let reader = BufReader::new(response.into_body().into_reader());
        let mut event = Event::default();
        let mut announced = false;
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if line.starts_with(':') {
                // The bridge's opening comment comes once its consumer exists: from here on no
                // event is missed, which is what a person (or a script) waits for.
                if !announced {
                    eprintln!("mediabus: following {url} (Ctrl-C to stop)");
                    announced = true;
                }
            } else if line.is_empty() {
                if let Some(id) = event.emit(json_out)? {
                    last_id = Some(id);
                }
                event = Event::default();
            } else {
                event.apply(&line);
            }
        }
        eprintln!("mediabus: event stream closed; reconnecting");
    }
}

/// The value of an SSE line `name: value` (one optional space after the colon).
fn field<'l>(line: &'l str, name: &str) -> Option<&'l str> {
    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

#[derive(Default)]
struct Event {
    name: String,
    data: String,
    id: Option<String>,
}

impl Event {
    /// Takes in one field line (`event:`, `data:`, `id:`; others are ignored).
    fn apply(&mut self, line: &str) {
        if let Some(v) = field(line, "event") {
            self.name = v.to_owned();
        } else if let Some(v) = field(line, "data") {
            // Several `data:` lines make one value, joined by newlines (WHATWG HTML §9.2.6:
            // each line adds itself and a newline; the last newline is dropped on dispatch).
            self.data.push_str(v);
            self.data.push('\n');
        } else if let Some(v) = field(line, "id") {
            self.id = Some(v.to_owned());
        }
    }

    /// The event's data as JSON (the Media document), `null` when it is not JSON.
    fn media(&self) -> Value {
        let data = self.data.strip_suffix('\n').unwrap_or(&self.data);
        serde_json::from_str(data).unwrap_or(Value::Null)
    }

    /// Prints the event (if it has data); returns its id. Errors: standard output is gone.
    fn emit(&self, json_out: bool) -> Result<Option<String>, CliError> {
        if self.data.is_empty() {
            return Ok(self.id.clone());
        }
        let media = self.media();
        if json_out {
            super::out(&json!({"event": self.name, "id": self.id, "data": media}).to_string())?;
        } else {
            let text = |k: &str| media[k].as_str().unwrap_or("-").to_owned();
            super::out(&format!("{:<16} {} {:<10} {}", self.name, text("id"), text("status"), text("originalName")))?;
        }
        Ok(self.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_multi_line_data_parse_as_the_sse_spec_says() {
        assert_eq!(field("data: {}", "data"), Some("{}"));
        assert_eq!(field("data:{}", "data"), Some("{}"));
        assert_eq!(field("data:  x", "data"), Some(" x"), "only one space is dropped");
        assert_eq!(field("database: x", "data"), None);
        let mut event = Event::default();
        for line in ["event: media.created", "data: {\"id\":", "data: \"m1\"}", "id: 7", "retry: 10"] {
            event.apply(line);
        }
        assert_eq!(event.media(), json!({"id": "m1"}), "lines joined by a newline");
        assert_eq!((event.name.as_str(), event.id.as_deref()), ("media.created", Some("7")));
    }
}
