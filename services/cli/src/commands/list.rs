//! `mediabus ls`: `GET /api/media`, `/api/users/{id}/media` or
//! `/api/entities/{type}/{id}/media` (DESIGN §7), as a table or JSON.

use serde_json::Value;

use super::human_size;
use crate::client::{Api, CliError};

/// What to list and how to print it.
pub struct Options {
    pub user: Option<String>,
    /// `TYPE/ID`.
    pub entity: Option<String>,
    pub media_type: Option<String>,
    pub limit: u32,
    pub all: bool,
    pub json: bool,
}

/// Prints one page (or every page with `all`).
pub fn run(api: &Api, options: Options) -> Result<(), CliError> {
    let base = match (&options.user, &options.entity) {
        (Some(user), _) => format!("/api/users/{}/media", encode(user)),
        (None, Some(entity)) => {
            let (kind, id) = entity
                .split_once('/')
                .filter(|(k, i)| !k.is_empty() && !i.is_empty())
                .ok_or_else(|| CliError::failed("--entity takes TYPE/ID, e.g. course/c1"))?;
            format!("/api/entities/{}/{}/media", encode(kind), encode(id))
        }
        (None, None) => "/api/media".to_owned(),
    };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = format!("?limit={}", options.limit);
        if let Some(t) = &options.media_type {
            query.push_str(&format!("&type={}", encode(t)));
        }
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = api.json("GET", &format!("{base}{query}"), None, "list media")?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        cursor = page["nextCursor"].as_str().map(String::from);
        if !options.all || cursor.is_none() {
            if !options.json {
                super::out(&table(&items))?;
                let total = page["total"].as_u64().unwrap_or(items.len() as u64);
                let more = if cursor.is_some() { " (more: --all)" } else { "" };
                eprintln!("{} of {total} media{more}", items.len());
            }
            break;
        }
    }
    if options.json {
        super::out(&serde_json::to_string_pretty(&Value::Array(items)).expect("JSON prints"))?;
    }
    Ok(())
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The items as a table with a header line, columns padded to their widest cell.
fn table(items: &[Value]) -> String {
    let rows: Vec<[String; 6]> = items
        .iter()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap_or("-").to_owned();
            let size = m["size"].as_u64().map_or("-".into(), human_size);
            let created = text("createdAt").chars().take(19).collect::<String>().replace('T', " ");
            [text("id"), text("type"), text("status"), size, created, text("originalName")]
        })
        .collect();
    let header = ["ID", "TYPE", "STATUS", "SIZE", "CREATED", "NAME"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 5 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(header)];
    lines.extend(rows.iter().map(|row| line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]])));
    lines.join("\n")
}
