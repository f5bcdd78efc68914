//! The routes of the OpenAPI document that are not subject calls: uploads and content
//! (`upload.rs`, `content.rs`), tus (`tus/`), HLS and events (`variants.rs`, `events.rs`), and the
//! bridge's own service routes (health, readiness). Keep each in step with its handler.

use super::*;

/// `POST /api/media/upload` and `GET /api/media/{id}/content`: streaming routes outside the
/// route table (implemented in `upload.rs` and `content.rs`). Keep this in step with them.
pub fn file_routes(paths: &mut Paths, schemas: &mut Schemas) {
    let media = json::<mediabus_contracts::Media>(schemas);

    let form = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "file",
            binary_schema().content_media_type("application/octet-stream").description(Some(
                "The file's bytes; its type is sniffed from them (the part's Content-Type is not trusted).",
            )),
        )
        .required("file")
        .property("entityId", string_schema().description(Some("Link to an entity: its id.")))
        .property("entityType", string_schema().description(Some("Link to an entity: its kind.")))
        .property(
            "isPublic",
            string_schema()
                .enum_values(Some(["true", "false"]))
                .description(Some("`true` makes the media readable by anyone; default `false`.")),
        )
        .property(
            "metadata",
            string_schema().description(Some("A JSON object, as text; stored as given (size-limited).")),
        )
        .property(
            "userId",
            string_schema().description(Some("Admin and service callers only: the owner to upload for.")),
        )
        .build();
    let multipart = ContentBuilder::new().schema(Some(form)).build();
    let mut responses = ResponsesBuilder::new().response(
        "201",
        ResponseBuilder::new()
            .description("Stored: the new media document, `url` = `/api/media/{id}/content`")
            .content("application/json", ContentBuilder::new().schema(Some(media.clone())).build()),
    );
    for status in [400, 401, 413, 415, 503, 504] {
        responses = responses.response(status.to_string(), error_response(status));
    }
    let upload = OperationBuilder::new()
        .operation_id(Some("upload_file"))
        .tag("media")
        .summary(Some("Upload a file (multipart/form-data)"))
        .description(Some(
            "Subject `upload_file`, or `upload.create` / `upload.part` / `upload.complete` for files larger \
             than one NATS message. Size caps and the allow-list of types apply per media type.",
        ))
        .request_body(Some(
            RequestBodyBuilder::new().required(Some(Required::True)).content("multipart/form-data", multipart).build(),
        ))
        .parameter(idempotency_key())
        .securities(Some([SecurityRequirement::new(BEARER, Vec::<String>::new())]))
        .responses(responses.build())
        .build();
    paths.add_path_operation("/api/media/upload", vec![HttpMethod::Post], upload);

    let validators = [
        ("ETag", "Strong validator: the stored bytes' SHA-256, quoted."),
        ("Last-Modified", "HTTP date of the stored bytes."),
        ("Cache-Control", "`private` for private media, `public` otherwise."),
    ];
    let body_headers = [
        ("Content-Length", "Bytes in this response."),
        ("Content-Disposition", "`inline` with the (sanitised) original file name."),
        ("Accept-Ranges", "`bytes`."),
    ];
    let mut full = ResponseBuilder::new()
        .description("The bytes, with the media's MIME type")
        .content("*/*", ContentBuilder::new().schema(Some(binary_schema())).build());
    let mut partial = ResponseBuilder::new()
        .description("The requested range of the bytes")
        .content("*/*", ContentBuilder::new().schema(Some(binary_schema())).build())
        .header("Content-Range", response_header("`bytes start-end/size`."));
    let mut not_modified = ResponseBuilder::new().description("Not modified (If-None-Match / If-Modified-Since)");
    for (name, description) in validators {
        full = full.header(name, response_header(description));
        partial = partial.header(name, response_header(description));
        not_modified = not_modified.header(name, response_header(description));
    }
    for (name, description) in body_headers {
        full = full.header(name, response_header(description));
        partial = partial.header(name, response_header(description));
    }
    let unsatisfiable = error_response(416).header("Content-Range", response_header("`bytes */size`."));
    let mut responses = ResponsesBuilder::new()
        .response("200", full)
        .response("206", partial)
        .response("304", not_modified)
        .response("416", unsatisfiable);
    for status in [400, 401, 404, 503] {
        responses = responses.response(status.to_string(), error_response(status));
    }
    let token = ParameterBuilder::new()
        .name("token")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "A signed, short-lived content token (from `GET /api/media/{id}/content-url`): grants access \
             without an Authorization header, e.g. for `<img src>`.",
        ))
        .schema(Some(string_schema()))
        .build();
    let variant = ParameterBuilder::new()
        .name("variant")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "A generated rendition instead of the original: `thumb` (WebP, fits 256×256) or `preview` (JPEG, \
             fits 1280×1280). 404 while it does not exist (yet); any other name is 400.",
        ))
        .schema(Some(string_schema().enum_values(Some(["thumb", "preview"]))))
        .build();
    let mut parameters = path_params("/api/media/{id}/content");
    parameters.extend([
        token,
        variant,
        header_param("Range", "One byte range: `bytes=start-end`, `bytes=start-` or `bytes=-suffix`."),
        header_param("If-None-Match", "ETag(s) of a cached copy: 304 when one matches."),
        header_param("If-Modified-Since", "HTTP date of a cached copy: 304 when not modified since."),
    ]);
    let content = OperationBuilder::new()
        .operation_id(Some("content"))
        .tag("media")
        .summary(Some("The media's bytes (Range, ETag, conditional requests)"))
        .description(Some(
            "Access as `media.findOne` (public media: anyone; private: owner and admins, 404 to others), \
             by bearer token or `token`.",
        ))
        .parameters(Some(parameters))
        .securities(Some([SecurityRequirement::new(BEARER, Vec::<String>::new()), SecurityRequirement::default()]))
        .responses(responses.build())
        .build();
    paths.add_path_operation("/api/media/{id}/content", vec![HttpMethod::Get], content);
    hls_and_events_routes(paths);
    tus_routes(paths);
}

/// `/api/uploads` and `/api/uploads/{id}`: the tus 1.0.0 endpoint (`tus/mod.rs`). Keep this in step
/// with it.
fn tus_routes(paths: &mut Paths) {
    let required_header = |name: &str, description: &str, schema: ObjectBuilder| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(description))
            .schema(Some(schema))
            .build()
    };
    let version = || {
        required_header(
            "Tus-Resumable",
            "The tus version the client speaks: `1.0.0` (anything else is 412).",
            string_schema().enum_values(Some(["1.0.0"])),
        )
    };
    let digits = || string_schema().pattern(Some("^[0-9]{1,19}$"));
    let checksum = || {
        header_param(
            "Upload-Checksum",
            "`sha1 <base64>` or `sha256 <base64>` of this request's body; 460 (nothing kept) on a mismatch.",
        )
    };
    let id_param = || {
        ParameterBuilder::new()
            .name("id")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("Upload id: the last segment of the `Location` of its creation."))
            .schema(Some(string_schema().min_length(Some(1))))
            .build()
    };
    let tus_header = || response_header("`1.0.0`.");
    let state_headers = |response: ResponseBuilder| {
        response
            .header("Tus-Resumable", tus_header())
            .header("Upload-Offset", response_header("Bytes received so far."))
            .header("Upload-Expires", response_header("HTTP date after which an unfinished upload is gone."))
            .header("Media-Id", response_header("Once complete: the id of the media created."))
            .header("Media-Url", response_header("Once complete: `/api/media/{id}`."))
    };
    let errors = |responses: ResponsesBuilder, statuses: &[u16]| {
        statuses.iter().fold(responses, |responses, status| {
            let description = match status {
                404 => "No such upload, or not the caller's",
                408 => "The body stalled (what arrived is kept unless checksummed)",
                409 => "`Upload-Offset` is not the upload's offset",
                410 => "The upload expired",
                412 => "`Tus-Resumable` missing or not `1.0.0` (see `Tus-Version`)",
                413 => {
                    "`Upload-Length` over `Tus-Max-Size`, a body past `Upload-Length`, or a file over its type's cap"
                }
                415 => "Body not `application/offset+octet-stream`, or a file type that is not accepted",
                460 => "`Upload-Checksum` does not match the body; nothing of the request was kept",
                _ => error_description(*status),
            };
            let response = error_response(*status).description(description).header("Tus-Resumable", tus_header());
            let response =
                if *status == 412 { response.header("Tus-Version", response_header("`1.0.0`.")) } else { response };
            responses.response(status.to_string(), response)
        })
    };
    let bearer = || Some([SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    let options = |operation_id: &str| {
        let capabilities = ResponseBuilder::new()
            .description("The server's capabilities")
            .header("Tus-Resumable", tus_header())
            .header("Tus-Version", response_header("`1.0.0`."))
            .header(
                "Tus-Extension",
                response_header("`creation,creation-with-upload,termination,expiration,checksum`."),
            )
            .header("Tus-Max-Size", response_header("Largest `Upload-Length`, bytes (`upload.max_body_bytes`)."))
            .header("Tus-Checksum-Algorithm", response_header("`sha1,sha256`."));
        OperationBuilder::new()
            .operation_id(Some(operation_id))
            .tag("uploads")
            .summary(Some("tus capabilities (no token needed)"))
            .responses(ResponsesBuilder::new().response("204", capabilities).build())
    };

    let created = state_headers(ResponseBuilder::new().description("Created; `Location` is the upload's URL"))
        .header("Location", response_header("`/api/uploads/{id}`."));
    let create = OperationBuilder::new()
        .operation_id(Some("tus_create"))
        .tag("uploads")
        .summary(Some("Start a resumable upload (tus 1.0 creation, creation-with-upload)"))
        .description(Some(
            "tus 1.0.0 (https://tus.io/protocols/resumable-upload) over `upload.create`. `Upload-Metadata` \
             keys (values base64): `filename`, `entityType`, `entityId`, `isPublic` (`true`/`false`), \
             `metadata` (a JSON object). A body (`application/offset+octet-stream`) is the upload's first \
             bytes. The media service checks the declared size now and sniffs the type at completion. \
             (The body is not modelled as a requestBody: OpenAPI tools have no serializer for its \
             media type.)",
        ))
        .parameters(Some([
            version(),
            required_header("Upload-Length", "Total bytes of the file.", digits()),
            header_param("Upload-Metadata", "Comma-separated `key base64(value)` pairs."),
            checksum(),
        ]))
        .securities(bearer())
        .responses(
            errors(
                ResponsesBuilder::new().response("201", created),
                &[400, 401, 408, 412, 413, 415, 422, 460, 503, 504],
            )
            .build(),
        )
        .build();
    paths.add_path_operation("/api/uploads", vec![HttpMethod::Post], create);
    paths.add_path_operation("/api/uploads", vec![HttpMethod::Options], options("tus_options").build());

    let offset = state_headers(ResponseBuilder::new().description("The upload's offset"))
        .header("Upload-Length", response_header("Total bytes."))
        .header("Upload-Metadata", response_header("As given at creation."))
        .header("Cache-Control", response_header("`no-store`."));
    let head = OperationBuilder::new()
        .operation_id(Some("tus_head"))
        .tag("uploads")
        .summary(Some("Offset of a resumable upload (tus 1.0 HEAD)"))
        .description(Some("Owner only. A finished upload also names its media (`Media-Id`, `Media-Url`)."))
        .parameters(Some([id_param(), version()]))
        .securities(bearer())
        .responses(
            errors(ResponsesBuilder::new().response("200", offset), &[401, 404, 410, 412, 413, 415, 422, 503, 504])
                .build(),
        )
        .build();
    paths.add_path_operation("/api/uploads/{id}", vec![HttpMethod::Head], head);

    let patched = state_headers(ResponseBuilder::new().description("Accepted; `Upload-Offset` is the new offset"));
    let patch = OperationBuilder::new()
        .operation_id(Some("tus_patch"))
        .tag("uploads")
        .summary(Some("Append bytes to a resumable upload (tus 1.0 PATCH)"))
        .description(Some(
            "Owner only. The bytes at `Upload-Offset`, sent on as `upload.part`s; the request that reaches \
             `Upload-Length` completes the upload (`upload.complete`) and names the media. Body: the bytes, \
             `Content-Type: application/offset+octet-stream` (not modelled as a requestBody: OpenAPI tools \
             have no serializer for that media type).",
        ))
        .parameters(Some([
            id_param(),
            version(),
            required_header("Upload-Offset", "Where these bytes start: the upload's current offset.", digits()),
            checksum(),
        ]))
        .securities(bearer())
        .responses(
            errors(
                ResponsesBuilder::new().response("204", patched),
                &[400, 401, 404, 408, 409, 410, 412, 413, 415, 422, 460, 503, 504],
            )
            .build(),
        )
        .build();
    paths.add_path_operation("/api/uploads/{id}", vec![HttpMethod::Patch], patch);

    let terminated =
        ResponseBuilder::new().description("Terminated: its bytes are gone").header("Tus-Resumable", tus_header());
    let delete = OperationBuilder::new()
        .operation_id(Some("tus_terminate"))
        .tag("uploads")
        .summary(Some("Cancel a resumable upload (tus 1.0 termination)"))
        .description(Some("Owner only. `upload.abort`: the received bytes are removed."))
        .parameters(Some([id_param(), version()]))
        .securities(bearer())
        .responses(errors(ResponsesBuilder::new().response("204", terminated), &[401, 404, 410, 412, 503, 504]).build())
        .build();
    paths.add_path_operation("/api/uploads/{id}", vec![HttpMethod::Delete], delete);
    let capabilities = options("tus_options_upload").parameters(Some([id_param()])).build();
    paths.add_path_operation("/api/uploads/{id}", vec![HttpMethod::Options], capabilities);
}

/// `GET /api/media/{id}/hls/{path}` (`variants.rs`) and `GET /api/events` (`events.rs`). Keep
/// this in step with them.
fn hls_and_events_routes(paths: &mut Paths) {
    let bytes = |types: &[&str], description: &str| {
        let mut response = ResponseBuilder::new().description(description);
        for media_type in types {
            response = response.content(*media_type, ContentBuilder::new().schema(Some(binary_schema())).build());
        }
        response
    };
    let file_path = ParameterBuilder::new()
        .name("path")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "A file of the media's HLS tree: `master.m3u8`, or `<height>p/index.m3u8`, `<height>p/init.mp4`, \
             `<height>p/seg_<n>.m4s`. One or two segments of `[a-z0-9_.-]`, none starting with `.`; anything \
             else is 400.",
        ))
        .schema(Some(
            string_schema().pattern(Some(r"^([a-z0-9_-][a-z0-9_.-]*/)?[a-z0-9_-][a-z0-9_.-]*\.(m3u8|mp4|m4s)$")),
        ))
        .build();
    let token = ParameterBuilder::new()
        .name("token")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "A content token of the media (`GET /api/media/{id}/content-url`). Playlists fetched with it carry it \
             in every relative URI, so a player needs nothing else.",
        ))
        .schema(Some(string_schema()))
        .build();
    let mut parameters = path_params("/api/media/{id}/hls/{path}");
    parameters.retain(|p| p.name != "path");
    parameters.extend([
        file_path,
        token,
        header_param("Range", "Segments and init sections: one byte range."),
        header_param("If-None-Match", "Segments and init sections: ETag(s) of a cached copy."),
    ]);
    let mut responses = ResponsesBuilder::new()
        .response(
            "200",
            bytes(
                &["application/vnd.apple.mpegurl", "video/mp4", "video/iso.segment"],
                "A playlist (`.m3u8`), an fMP4 initialization section (`.mp4`) or media segment (`.m4s`)",
            ),
        )
        .response("206", bytes(&["video/mp4", "video/iso.segment"], "The requested range of a segment or init section"))
        .response("304", ResponseBuilder::new().description("Not modified (If-None-Match / If-Modified-Since)"))
        .response("416", error_response(416).header("Content-Range", response_header("`bytes */size`.")));
    for status in [400, 401, 404, 500, 503] {
        responses = responses.response(status.to_string(), error_response(status));
    }
    let hls = OperationBuilder::new()
        .operation_id(Some("hls"))
        .tag("media")
        .summary(Some("The HLS stream of a video (fMP4): master playlist, renditions, segments"))
        .description(Some(
            "Access as the media's content: bearer token or `token`. Start at `master.m3u8`; the variant `hls` of \
             the media document points there.",
        ))
        .parameters(Some(parameters))
        .securities(Some([SecurityRequirement::new(BEARER, Vec::<String>::new()), SecurityRequirement::default()]))
        .responses(responses.build())
        .build();
    paths.add_path_operation("/api/media/{id}/hls/{path}", vec![HttpMethod::Get], hls);

    let query = |name: &str, description: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(description))
            .schema(Some(string_schema()))
            .build()
    };
    let parameters = vec![
        query("token", "The access token, for clients that cannot send Authorization (EventSource)."),
        query("lastEventId", "Resume after this event id (a stream sequence number), as `Last-Event-ID` does."),
        query("entityType", "With `entityId`: also the public media of this entity (e.g. `user` for avatars)."),
        query("entityId", "With `entityType`: the entity whose public media to follow."),
        header_param("Last-Event-ID", "The id of the last event received: the stream resumes right after it."),
    ];
    // Before OpenAPI 3.2 (`itemSchema`), the schema of a `text/event-stream` describes one event:
    // its fields as an object (https://html.spec.whatwg.org/multipage/server-sent-events.html).
    let subjects = ["media.created", "media.updated", "media.removed", "media.processed"];
    let stream = ObjectBuilder::new()
        .description(Some(
            "One Server-Sent Event; `data` is the media's document as JSON (the Media schema). A comment line \
             every 15 s keeps the connection open.",
        ))
        .property("event", string_schema().enum_values(Some(subjects)).description(Some("The media event's subject.")))
        .property("id", string_schema().pattern(Some("^[0-9]+$")).description(Some("The event's stream sequence.")))
        .property("data", string_schema().content_media_type("application/json"))
        .required("event")
        .required("id")
        .required("data");
    let mut responses = ResponsesBuilder::new().response(
        "200",
        ResponseBuilder::new()
            .description("Server-Sent Events, until the client leaves or the access token expires")
            .content("text/event-stream", ContentBuilder::new().schema(Some(stream)).build()),
    );
    for status in [400, 401, 503] {
        responses = responses.response(status.to_string(), error_response(status));
    }
    let events = OperationBuilder::new()
        .operation_id(Some("events"))
        .tag("media")
        .summary(Some("Live media events the caller may see (Server-Sent Events)"))
        .description(Some(
            "The caller's own media (admins: all) and, with `entityType` and `entityId`, the public media of that \
             entity. Authorization: Bearer, or `token`.",
        ))
        .parameters(Some(parameters))
        .securities(Some([SecurityRequirement::new(BEARER, Vec::<String>::new())]))
        .responses(responses.build())
        .build();
    paths.add_path_operation("/api/events", vec![HttpMethod::Get], events);
}

/// `GET /healthz` and `GET /readyz`.
pub fn service_routes(paths: &mut Paths, schemas: &mut Schemas) {
    let health = json::<schemas::Health>(schemas);
    let readiness = json::<schemas::Readiness>(schemas);
    let reply = |description: &str, schema: RefOr<Schema>| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().schema(Some(schema)).build())
    };
    let healthz = OperationBuilder::new()
        .operation_id(Some("healthz"))
        .tag("health")
        .summary(Some("Liveness: the process answers"))
        .response("200", reply("Alive", health));
    paths.add_path_operation("/healthz", vec![HttpMethod::Get], healthz);
    let readyz = OperationBuilder::new()
        .operation_id(Some("readyz"))
        .tag("health")
        .summary(Some("Readiness: NATS connected and every `http.ready_services` service answers `$SRV.PING`"))
        .response("200", reply("Ready", readiness.clone()))
        .response("503", reply("Not ready", readiness));
    paths.add_path_operation("/readyz", vec![HttpMethod::Get], readyz);
}
