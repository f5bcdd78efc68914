//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>, version `00`): the `traceparent`
//! header `00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`, read from and written to
//! NATS headers ([`async_nats::HeaderMap`]) and HTTP headers as a string; and the remote parent
//! of a request's span for OTLP export ([`TraceContext::attach_to`]).

use std::fmt;

/// The header name, lowercase as W3C writes it (NATS header lookup here is case-insensitive).
pub const TRACEPARENT: &str = "traceparent";

/// One hop of a trace: the trace id shared by every span of the trace, the id of the span that
/// sent the message (the receiver's parent), and the flags (bit 0: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// Trace flags; `0x01` = sampled.
    pub flags: u8,
}

impl TraceContext {
    /// A new trace (random trace and span ids, sampled): what the edge (the bridge) starts when a
    /// request comes without a valid `traceparent`.
    pub fn new_root() -> Self {
        Self { trace_id: random_id(), span_id: random_id(), flags: 0x01 }
    }

    /// The same trace with a new span id: what a hop sends on as the parent of the next hop.
    pub fn child(&self) -> Self {
        Self { span_id: random_id(), ..*self }
    }

    /// Parses a `traceparent` value. Returns `None` for anything but a well-formed version-`00`
    /// value with non-zero ids (W3C: such a header is ignored and a new trace starts). Higher
    /// versions are read by their first four fields, as the spec asks.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        u8::from_str_radix(version, 16).ok()?;
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let [flags] = hex_bytes::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, span_id, flags })
    }

    /// The context carried by `headers` (`traceparent`, any case), if valid.
    pub fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Option<Self> {
        let headers = headers?;
        let value = headers.get(TRACEPARENT).or_else(|| {
            headers
                .iter()
                .find(|(k, _)| AsRef::<str>::as_ref(*k).eq_ignore_ascii_case(TRACEPARENT))
                .and_then(|(_, v)| v.first())
        })?;
        Self::parse(value.as_str())
    }

    /// Writes this context as `traceparent` into `headers`, replacing any previous value.
    pub fn inject(&self, headers: &mut async_nats::HeaderMap) {
        headers.insert(TRACEPARENT, self.to_string().as_str());
    }

    /// The trace id as 32 lowercase hex digits (what logs carry as `trace_id`).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// Makes this context the remote parent of `span` in OpenTelemetry: the span is exported with
    /// this trace id and `span_id` as its parent span id, sampled as `flags` say (bit 0), so the
    /// spans of one request in every service form one trace. Call it on a new span, before it is
    /// first entered. Does nothing when spans are not exported (no `telemetry.otlp_endpoint`, no
    /// OpenTelemetry layer) or the span is disabled by the log filter; the span's own fields and
    /// log lines are unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use mediabus_telemetry::trace::TraceContext;
    ///
    /// let trace = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    /// let span = tracing::info_span!("rpc", trace_id = %trace.trace_id_hex());
    /// trace.attach_to(&span);
    /// ```
    pub fn attach_to(&self, span: &tracing::Span) {
        use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let parent = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::NONE,
        );
        // Err without the layer (no export) or once the span has started: nothing to do then.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }

    /// The context a hop sends on from inside `span`: its trace, with `span`'s own exported span
    /// id as the next hop's parent, so the exported spans of a request form a chain (bridge →
    /// worker → job). `None` when `span` is not exported (no `telemetry.otlp_endpoint`, filtered
    /// out, or not sampled): the hop then forwards the `traceparent` it received.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let context = span.context();
        let own = context.span().span_context().clone();
        (own.is_valid() && own.is_sampled()).then(|| Self {
            trace_id: own.trace_id().to_bytes(),
            span_id: own.span_id().to_bytes(),
            flags: own.trace_flags().to_u8(),
        })
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), self.flags)
    }
}

fn random_id<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS source does not fail on supported systems; should it, a counter-seeded id still
    // keeps traces apart within this process, which is all a trace id needs.
    if getrandom::fill(&mut bytes).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static FALLBACK: AtomicU64 = AtomicU64::new(1);
        let n = FALLBACK.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = n[i % 8] ^ (i as u8).wrapping_add(1);
        }
    }
    if bytes.iter().all(|b| *b == 0) {
        bytes[N - 1] = 1;
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `2 * N` lowercase hex digits (W3C forbids uppercase) into `N` bytes.
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_malformed_values() {
        let value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ctx = TraceContext::parse(value).unwrap();
        assert_eq!(ctx.to_string(), value);
        assert_eq!(ctx.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        let child = ctx.child();
        assert_eq!((child.trace_id, child.flags), (ctx.trace_id, ctx.flags));
        assert_ne!(child.span_id, ctx.span_id);
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        let root = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&root.to_string()), Some(root));
        let mut headers = async_nats::HeaderMap::new();
        root.inject(&mut headers);
        assert_eq!(TraceContext::from_headers(Some(&headers)), Some(root));
    }

    /// The spans an SDK provider ended, kept in memory.
    #[derive(Debug, Clone, Default)]
    struct Kept(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Kept {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[test]
    fn an_attached_span_continues_the_trace_and_a_child_follows_it() {
        use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
        use tracing_subscriber::layer::SubscriberExt;
        let kept = Kept::default();
        let provider =
            opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(kept.clone()).build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let sampled = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let unsampled = TraceContext::parse("00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", subject = "upload_file");
            sampled.attach_to(&span);
            span.in_scope(|| tracing::info_span!("inner").in_scope(|| {}));
            let dropped = tracing::info_span!("job");
            unsampled.attach_to(&dropped);
            dropped.in_scope(|| {});
        });
        let spans = kept.0.lock().unwrap().clone();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["inner", "rpc"], "an unsampled parent is not exported");
        let (inner, rpc) = (&spans[0], &spans[1]);
        assert_eq!(rpc.span_context.trace_id(), TraceId::from_bytes(sampled.trace_id));
        assert_eq!((rpc.parent_span_id, rpc.parent_span_is_remote), (SpanId::from_bytes(sampled.span_id), true));
        assert_eq!(inner.span_context.trace_id(), rpc.span_context.trace_id());
        assert_eq!(inner.parent_span_id, rpc.span_context.span_id());
        let hop = tracing::subscriber::with_default(
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t"))),
            || {
                let span = tracing::info_span!("http");
                sampled.attach_to(&span);
                TraceContext::of_span(&span)
            },
        )
        .expect("an exported span is a hop");
        assert_eq!(hop.trace_id, sampled.trace_id);
        assert_ne!(hop.span_id, sampled.span_id, "the next hop's parent is this span, not the caller's");
        // Without the layer, nothing to attach to: no panic, no effect.
        sampled.attach_to(&tracing::info_span!("unexported"));
        assert_eq!(TraceContext::of_span(&tracing::info_span!("unexported")), None);
    }
}
