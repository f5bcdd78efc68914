//! Request payloads of the media subjects (DESIGN §5). Filled in with the media service.
