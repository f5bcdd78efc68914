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
            Err(e) if last_id.is_some() => {
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
        let reader = BufReader::new(response.into_body().into_reader());
        let mut event = Event::default();
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if line.is_empty() {
                if let Some(id) = event.emit(json_out) {
                    last_id = Some(id);
                }
                event = Event::default();
            } else if let Some(v) = field(&line, "event") {
                event.name = v.to_owned();
            } else if let Some(v) = field(&line, "data") {
                event.data.push_str(v);
            } else if let Some(v) = field(&line, "id") {
                event.id = Some(v.to_owned());
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
    /// Prints the event (if it has data); returns its id.
    fn emit(&self, json_out: bool) -> Option<String> {
        if self.data.is_empty() {
            return self.id.clone();
        }
        let media: Value = serde_json::from_str(&self.data).unwrap_or(Value::Null);
        if json_out {
            println!("{}", json!({"event": self.name, "id": self.id, "data": media}));
        } else {
            let text = |k: &str| media[k].as_str().unwrap_or("-").to_owned();
            println!("{:<16} {} {:<10} {}", self.name, text("id"), text("status"), text("originalName"));
        }
        self.id.clone()
    }
}
