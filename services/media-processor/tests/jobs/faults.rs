//! Processors that die, fail or stop: redelivery to another worker, dead letters, the SIGTERM
//! hand-back, and jobs given up through the max-deliveries advisory.

use super::*;

/// SIGKILL a processor in the middle of a transcode: its ffmpeg dies with it (parent-death
/// signal), the job is redelivered to the other one (after the short ack wait configured here)
/// and completed there without redoing the poster variants the first one saved; the document ends
/// `READY` once, with one set of variants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processor_hands_its_video_to_the_other() {
    let quick = [("MEDIABUS__JOBS__ACK_WAIT_SECS", "4"), ("MEDIABUS__JOBS__BACKOFF_BASE_MS", "200")];
    let mut stack = Stack::start(2, &quick).await;
    let mut processed = Processed::watch(&stack.client).await;
    let dir = tempfile::tempdir().unwrap();
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 12);
    let media = stack.upload("alice", "clip.mp4", &video).await;
    let id = media["id"].as_str().unwrap().to_owned();

    // Wait until one processor is transcoding (its ffmpeg runs), then kill it.
    let deadline = Instant::now() + JOB_DEADLINE;
    let (victim, orphans) = loop {
        let busy = stack.processors.iter().position(|p| !p.ffmpeg_children().is_empty());
        let doc = stack.find("alice", &id).await;
        if let Some(i) = busy
            && variant_names(&doc).contains(&"thumb".to_owned())
        {
            break (i, stack.processors[i].ffmpeg_children());
        }
        assert_ne!(doc["status"], "READY", "finished before a processor could be killed");
        assert!(Instant::now() < deadline, "no processor started transcoding");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let poster: Vec<(PathBuf, _)> = ["thumb.webp", "preview.jpg"]
        .iter()
        .map(|file| {
            let path = stack.dir.path().join("files/variants").join(&id).join(file);
            let stamp = file_stamp(&path);
            (path, stamp)
        })
        .collect();
    stack.processors[victim].kill();
    wait_ended(&orphans, Duration::from_secs(10)).await;

    let done = stack.settled("alice", &id).await;
    assert_eq!(done["status"], "READY", "{done}");
    for (path, stamp) in &poster {
        assert_eq!(&file_stamp(path), stamp, "{} was written again by the redelivered job", path.display());
    }
    // Each delivery takes a consumer sequence: two or more means the job was redelivered.
    assert!(consumer_info(&stack.client).await.delivered.consumer_sequence >= 2, "the job was redelivered");
    assert_eq!(variant_names(&done), ["hls", "preview", "thumb"]);
    let hls = done["variants"].as_array().unwrap().iter().find(|v| v["name"] == "hls").unwrap();
    assert_eq!(hls["url"], format!("/api/media/{id}/hls/master.m3u8"));
    assert_eq!((hls["width"].as_u64(), hls["height"].as_u64()), (Some(1280), Some(720)));
    assert!(done["details"]["durationMs"].as_u64().unwrap().abs_diff(12_000) <= 100);
    assert_eq!(stack.stored(&format!("variants/{id}/hls/master.m3u8")).len(), 1);
    assert!(!stack.stored(&format!("variants/{id}/hls/360p/")).is_empty());
    let events = processed.of(&id, 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "READY once: {events:?}");
}

/// A job whose original is gone fails on every delivery: after `max_deliver` (2 here) it is in
/// the dead-letter stream and the media is `FAILED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_ends_in_the_dead_letters() {
    let mut stack = Stack::start(0, &[]).await;
    let media = stack.upload("alice", "frame.png", &std::fs::read(&media_files().png).unwrap()).await;
    let id = media["id"].as_str().unwrap().to_owned();
    // The job waits in the stream; break it by removing the original's bytes.
    for file in stack.stored("") {
        std::fs::remove_file(file).unwrap();
    }
    stack.add_processor(&[("MEDIABUS__JOBS__MAX_DELIVER", "2"), ("MEDIABUS__JOBS__BACKOFF_BASE_MS", "100")]);
    let failed = stack.settled("alice", &id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(failed["failureReason"].as_str().unwrap().contains("reprocess"));

    let js = async_nats::jetstream::new(stack.client.clone());
    let mut dlq = js.get_stream("MEDIA_JOBS_DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1);
    let dead = dlq.get_last_raw_message_by_subject("jobs.media.dead").await.unwrap();
    let dead: Value = serde_json::from_slice(&dead.payload).unwrap();
    assert_eq!((dead["job"]["mediaId"].as_str(), dead["deliveries"].as_u64()), (Some(id.as_str()), Some(2)));
    assert!(dead["error"].as_str().unwrap().contains("not found"), "{dead}");
    // The work queue is empty: the job was acked once dead-lettered.
    let mut jobs = js.get_stream("MEDIA_JOBS").await.unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, 0);
}

/// SIGTERM in the middle of a transcode with no grace period: the processor hands the job back
/// at once (its ffmpeg is killed within 2 s, though the advisory loop's pull of 8 s is still
/// open; a nak: with an ack wait of 300 s, only a nak lets another worker have it within the
/// test's deadline) and exits 0 once that pull ends; another processor started afterwards
/// completes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_job_back_and_exits_zero() {
    // Every processor sets the shared consumer's config when it starts: both get the long wait.
    let slow = [
        ("MEDIABUS__JOBS__SHUTDOWN_GRACE_SECS", "0"),
        ("MEDIABUS__JOBS__ACK_WAIT_SECS", "300"),
        ("MEDIABUS__JOBS__PULL_EXPIRES_MS", "8000"),
    ];
    let mut stack = Stack::start(1, &slow).await;
    assert_eq!(consumer_info(&stack.client).await.config.ack_wait, Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 12);
    let id = stack.upload("alice", "clip.mp4", &video).await["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + JOB_DEADLINE;
    // The poster is saved first: an ffmpeg running after that is the HLS transcode.
    let transcoding = loop {
        let children = stack.processors[0].ffmpeg_children();
        let doc = stack.find("alice", &id).await;
        if !children.is_empty() && variant_names(&doc).contains(&"thumb".to_owned()) {
            break children;
        }
        assert_ne!(doc["status"], "READY", "finished before SIGTERM");
        assert!(Instant::now() < deadline, "the processor never started transcoding");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut first = stack.processors.remove(0);
    let term = Command::new("kill").arg("-TERM").arg(first.pid().to_string()).status().unwrap();
    assert!(term.success());
    let stopped = Instant::now();
    wait_ended(&transcoding, Duration::from_secs(2)).await;
    let status = first.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(stopped.elapsed() < Duration::from_secs(15), "took {:?} to stop", stopped.elapsed());
    assert_eq!(stack.find("alice", &id).await["status"], "PROCESSING");

    stack.add_processor(&slow);
    let done = stack.settled("alice", &id).await;
    assert_eq!(done["status"], "READY", "{done}");
    assert_eq!(variant_names(&done), ["hls", "preview", "thumb"]);
}

/// A processor SIGKILLed on the job's last delivery (`max_deliver` 1 here) never reports back:
/// JetStream's max-deliveries advisory makes the other processor give the job up. The media ends
/// `FAILED` with a readable reason, the dead letter is in `MEDIA_JOBS_DLQ`, `media.processed`
/// (FAILED) is emitted once, the job leaves the work queue, and the killed processor's ffmpeg
/// died with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_on_the_last_delivery_dead_letters_the_job() {
    let last = [("MEDIABUS__JOBS__MAX_DELIVER", "1"), ("MEDIABUS__JOBS__ACK_WAIT_SECS", "3")];
    let mut stack = Stack::start(2, &last).await;
    assert_eq!(consumer_info(&stack.client).await.config.max_deliver, 1);
    let mut processed = Processed::watch(&stack.client).await;
    let dir = tempfile::tempdir().unwrap();
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 12);
    let id = stack.upload("alice", "clip.mp4", &video).await["id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + JOB_DEADLINE;
    let (victim, children) = loop {
        if let Some(i) = stack.processors.iter().position(|p| !p.ffmpeg_children().is_empty()) {
            break (i, stack.processors[i].ffmpeg_children());
        }
        assert_ne!(stack.find("alice", &id).await["status"], "READY", "finished before a processor could be killed");
        assert!(Instant::now() < deadline, "no processor started ffmpeg");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stack.processors[victim].kill();
    wait_ended(&children, Duration::from_secs(10)).await;

    assert_given_up(&stack, &mut processed, &id).await;
}

/// The only processor is SIGKILLed on the job's last delivery (`max_deliver` 1): JetStream's
/// max-deliveries advisory is published while no processor is connected, and kept by
/// `MEDIA_JOBS_EXHAUSTED`. A processor started only after that gives the job up: the media ends
/// `FAILED` with a readable reason, one dead letter, one `media.processed`, the job gone from the
/// work queue, the advisory acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_published_while_no_processor_runs_is_handled_by_the_next_one() {
    let last = [("MEDIABUS__JOBS__MAX_DELIVER", "1"), ("MEDIABUS__JOBS__ACK_WAIT_SECS", "3")];
    let mut stack = Stack::start(1, &last).await;
    let mut processed = Processed::watch(&stack.client).await;
    let dir = tempfile::tempdir().unwrap();
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 12);
    let id = stack.upload("alice", "clip.mp4", &video).await["id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + JOB_DEADLINE;
    while stack.processors[0].ffmpeg_children().is_empty() {
        assert_ne!(stack.find("alice", &id).await["status"], "READY", "finished before the processor could be killed");
        assert!(Instant::now() < deadline, "the processor never started ffmpeg");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let children = stack.processors[0].ffmpeg_children();
    stack.processors.remove(0).kill();
    wait_ended(&children, Duration::from_secs(10)).await;

    // No processor runs now: wait for JetStream to give up the delivery (after the 3 s ack wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    while advisories_stored(&stack.client).await == 0 {
        assert!(Instant::now() < deadline, "no max-deliveries advisory in MEDIA_JOBS_EXHAUSTED");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.find("alice", &id).await["status"], "PROCESSING");
    assert_eq!(jobs_left(&stack.client).await, 1, "the job out of deliveries waits in the work queue");

    stack.add_processor(&last);
    assert_given_up(&stack, &mut processed, &id).await;
    let info = advisories_settled(&stack.client).await;
    assert_eq!(info.delivered.stream_sequence, 1, "{info:?}");
}

/// How a job abandoned on its last delivery (`max_deliver` 1) ends: media `id` `FAILED` with a
/// readable reason, the job removed from the work queue (the give-up's last step), one dead
/// letter saying it was never acked, one `media.processed`.
async fn assert_given_up(stack: &Stack, processed: &mut Processed, id: &str) {
    let failed = stack.settled("alice", id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let reason = failed["failureReason"].as_str().expect("a reason");
    assert!(reason.contains("stopped") && reason.contains("media.reprocess"), "readable: {reason}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_left(&stack.client).await > 0 {
        assert!(Instant::now() < deadline, "the job out of deliveries is still in MEDIA_JOBS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let js = async_nats::jetstream::new(stack.client.clone());
    let mut dlq = js.get_stream("MEDIA_JOBS_DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1, "one dead letter");
    let dead = dlq.get_last_raw_message_by_subject("jobs.media.dead").await.unwrap();
    let dead: Value = serde_json::from_slice(&dead.payload).unwrap();
    assert_eq!((dead["job"]["mediaId"].as_str(), dead["deliveries"].as_u64()), (Some(id), Some(1)));
    assert!(dead["error"].as_str().unwrap().contains("never acked"), "{dead}");
    let events = processed.of(id, 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "FAILED once: {events:?}");
    assert_eq!(events[0]["data"]["status"], "FAILED");
}

/// The max-deliveries advisory handler gives up only jobs still pending, and each once: with
/// the consumer paused (jobs stay in the queue), an advisory for a job whose media was removed
/// meanwhile only deletes the job (no dead letter, no event); one for a pending job fails its
/// media once, and the same advisory again changes nothing. Every advisory ends acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisories_give_up_only_pending_jobs_and_only_once() {
    let stack = Stack::start(1, &[]).await;
    let mut processed = Processed::watch(&stack.client).await;
    stack.pause_jobs().await;
    let js = async_nats::jetstream::new(stack.client.clone());
    let png = std::fs::read(&media_files().png).unwrap();
    let mut queued = Vec::new();
    for name in ["removed.png", "pending.png"] {
        let id = stack.upload("alice", name, &png).await["id"].as_str().unwrap().to_owned();
        let seq = js.get_stream("MEDIA_JOBS").await.unwrap().info().await.unwrap().state.last_sequence;
        queued.push((id, seq));
    }
    let [(removed, removed_seq), (pending, pending_seq)] = <[_; 2]>::try_from(queued).unwrap();
    stack.call("media.remove", Some("alice"), json!({"id": removed})).await.unwrap();
    advise(&js, pending_seq).await;
    let failed = stack.settled("alice", &pending).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(failed["failureReason"].as_str().unwrap().contains("stopped"), "{failed}");
    // The same advisory again, then the removed media's: one processor handles them in order, so
    // once the second job is gone from the queue both were handled.
    advise(&js, pending_seq).await;
    advise(&js, removed_seq).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_left(&stack.client).await > 0 {
        assert!(Instant::now() < deadline, "the removed media's job is still queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut dlq = js.get_stream("MEDIA_JOBS_DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1, "one dead letter: the pending job's");
    let dead = dlq.get_last_raw_message_by_subject("jobs.media.dead").await.unwrap();
    let dead: Value = serde_json::from_slice(&dead.payload).unwrap();
    assert_eq!((dead["job"]["mediaId"].as_str(), dead["deliveries"].as_u64()), (Some(pending.as_str()), Some(5)));
    assert_eq!(processed.of(&pending, 1, Duration::from_secs(5)).await.len(), 1, "FAILED once");
    assert!(processed.of(&removed, 0, Duration::ZERO).await.is_empty(), "nothing for the removed media");
    let info = advisories_settled(&stack.client).await;
    assert_eq!(info.delivered.stream_sequence, 3, "all three advisories taken: {info:?}");
}

/// A give-up whose step fails is retried, not lost: while the test holds the shared SQLite
/// file's write lock, the advisory handler's `FAILED` write times out (busy), the advisory is
/// naked and delivered again; once the lock is released it completes. The media ends `FAILED`
/// once, the dead letter written by the failed try is not written twice (its `Nats-Msg-Id`), the
/// job leaves the queue, the advisory ends acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_up_that_fails_is_retried_until_it_completes() {
    let stack = Stack::start(1, &[("MEDIABUS__JOBS__BACKOFF_BASE_MS", "200")]).await;
    let mut processed = Processed::watch(&stack.client).await;
    stack.pause_jobs().await;
    let id = stack.upload("alice", "frame.png", &std::fs::read(&media_files().png).unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let js = async_nats::jetstream::new(stack.client.clone());
    let seq = js.get_stream("MEDIA_JOBS").await.unwrap().info().await.unwrap().state.last_sequence;

    // Readers go on (WAL); writers wait for the lock, then fail busy.
    let lock = rusqlite::Connection::open(stack.dir.path().join("media.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    advise(&js, seq).await;
    let mut consumer = advisory_consumer(&stack.client).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer.info().await.unwrap().delivered.consumer_sequence < 2 {
        assert!(Instant::now() < deadline, "the advisory was not delivered again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.find("alice", &id).await["status"], "PROCESSING", "nothing written under the lock");
    assert_eq!(jobs_left(&stack.client).await, 1, "the job stays queued until it is given up");
    lock.execute_batch("ROLLBACK").unwrap();

    let failed = stack.settled("alice", &id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_left(&stack.client).await > 0 {
        assert!(Instant::now() < deadline, "the job is still in MEDIA_JOBS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut dlq = js.get_stream("MEDIA_JOBS_DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1, "one dead letter across the tries");
    assert_eq!(processed.of(&id, 1, Duration::from_secs(5)).await.len(), 1, "FAILED once");
    let info = advisories_settled(&stack.client).await;
    assert!(info.delivered.consumer_sequence >= 2 && info.delivered.stream_sequence == 1, "{info:?}");
}
