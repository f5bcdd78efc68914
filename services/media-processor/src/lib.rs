//! media-processor: turns stored uploads into what DESIGN §9 promises — `details`, `variants`
//! (`thumb`, `preview`, `hls`) and a final `READY` or `FAILED` — from jobs on the JetStream
//! work-queue stream `MEDIA_JOBS`.
//!
//! Media kind → module (one hop): images → [`image`], video → [`video`], audio → [`audio`],
//! PDF → [`pdf`]. Errors that end a job or retry it: [`error`]. The queue, the consumer and
//! the pull loop: [`jobs`]; one job from document to variants: [`worker`]; settings: [`config`].

pub mod audio;
pub mod config;
pub mod error;
pub mod image;
pub mod jobs;
pub mod pdf;
pub mod video;
pub mod worker;
