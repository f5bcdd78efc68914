//! Audio `details` (DESIGN §9) from ffprobe (Debian's, a child process; see
//! [`crate::video`] for how children are run and bounded).

use std::path::Path;

use serde::Serialize;

use crate::error::{ProcessError, Result};
use crate::video::tool::{self, Probe};

/// Audio `details` of DESIGN §9, as JSON: `{durationMs, audioCodec, sampleRate, channels, bitrate}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioDetails {
    /// Duration, milliseconds (the container's, else the stream's).
    pub duration_ms: u64,
    /// ffmpeg's codec name of the first audio stream (`mp3`, `pcm_s16le`, `aac`, `opus`…).
    pub audio_codec: String,
    /// Samples per second, Hz.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u32,
    /// Bitrate of the audio stream (the codec's, e.g. 128000 for a 128k MP3), else of the whole
    /// file, bits per second, when either is known.
    pub bitrate: Option<u64>,
}

/// Reads `path`'s first audio stream with ffprobe (`-show_format -show_streams`, 60 s at most).
///
/// Errors ([`ProcessError::Rejected`], with a reason for the owner): not a readable media file,
/// no audio stream, unknown duration or sample rate. ffprobe missing → [`ProcessError::Transient`].
pub async fn probe(path: &Path) -> Result<AudioDetails> {
    let probe = tool::ffprobe(path, "audio file").await?;
    let declared = details_from_probe(&probe, None);
    if !matches!(&declared, Err(ProcessError::Rejected(m)) if m == NO_DURATION) {
        return declared;
    }
    // A recording without a declared duration (MediaRecorder WebM/Opus): measure its packets.
    let measured = tool::measured_duration_ms(path).await?;
    details_from_probe(&probe, measured)
}

const NO_DURATION: &str = "the audio's duration cannot be read";

/// [`AudioDetails`] out of ffprobe's JSON; `measured_ms` stands for the duration when the file
/// declares none.
fn details_from_probe(probe: &Probe, measured_ms: Option<u64>) -> Result<AudioDetails> {
    let audio = probe
        .streams
        .iter()
        .find(|s| s.is("audio"))
        .ok_or_else(|| ProcessError::rejected("the file has no audio stream"))?;
    let duration_ms = tool::millis(probe.format.duration.as_deref())
        .or_else(|| tool::millis(audio.duration.as_deref()))
        .filter(|ms| *ms > 0)
        .or(measured_ms.filter(|ms| *ms > 0))
        .ok_or_else(|| ProcessError::rejected(NO_DURATION))?;
    let sample_rate = tool::integer(audio.sample_rate.as_deref())
        .and_then(|r| u32::try_from(r).ok())
        .ok_or_else(|| ProcessError::rejected("the audio's sample rate cannot be read"))?;
    Ok(AudioDetails {
        duration_ms,
        audio_codec: audio.codec_name.clone().unwrap_or_else(|| "unknown".to_owned()),
        sample_rate,
        channels: audio.channels.unwrap_or(0),
        bitrate: tool::integer(audio.bit_rate.as_deref()).or_else(|| tool::integer(probe.format.bit_rate.as_deref())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::tool::{ProbeFormat, ProbeStream};

    #[test]
    fn details_come_from_the_first_audio_stream() {
        let probe = Probe {
            streams: vec![
                ProbeStream {
                    codec_type: Some("video".into()),
                    codec_name: Some("mjpeg".into()),
                    ..Default::default()
                },
                ProbeStream {
                    codec_type: Some("audio".into()),
                    codec_name: Some("mp3".into()),
                    sample_rate: Some("44100".into()),
                    channels: Some(2),
                    bit_rate: Some("128000".into()),
                    ..Default::default()
                },
            ],
            format: ProbeFormat { duration: Some("3.0005".into()), ..Default::default() },
        };
        let d = details_from_probe(&probe, None).unwrap();
        assert_eq!(
            d,
            AudioDetails {
                duration_ms: 3001,
                audio_codec: "mp3".into(),
                sample_rate: 44100,
                channels: 2,
                bitrate: Some(128_000)
            }
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["sampleRate"], 44100);
        let silent = Probe { streams: vec![], ..Default::default() };
        assert!(matches!(details_from_probe(&silent, None), Err(ProcessError::Rejected(m)) if m.contains("no audio")));
    }
}
