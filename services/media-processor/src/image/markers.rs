//! The marker segments at the head of a JPEG file (ITU-T T.81, Annex B.1.1: a marker is `0xFF`
//! then a code, optionally preceded by fill `0xFF` bytes; all but SOI, EOI, RSTn and TEM are
//! followed by a big-endian length that counts itself). Walked up to the image data (SOS) with
//! seeks over the bodies nobody asked for, so the frame header of a 150 MB file is found after
//! reading a few KiB. Both the frame-size check and the EXIF orientation read walk with this.

use std::io::{BufReader, ErrorKind, Read, Seek};

/// Segments looked at before giving up (a real JPEG has a few dozen at most before its scan:
/// APPn, DQT, DHT, COM): a crafted file of empty segments costs at most this many seeks.
const MAX_SEGMENTS: usize = 1024;

/// SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC): a frame header, which gives the image size.
pub(crate) fn is_frame_header(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// APP1, where EXIF lives (its body starts with `Exif\0\0`).
pub(crate) const APP1: u8 = 0xE1;

/// A cursor over the segments of a JPEG, its reader positioned just after SOI (`FF D8`).
pub(crate) struct Segments<R> {
    reader: BufReader<R>,
    /// Body bytes of the current segment not read yet, skipped by the next [`Segments::next`].
    unread: u16,
    seen: usize,
}

impl<R: Read + Seek> Segments<R> {
    /// Small buffer: segment headers are a few bytes apart after a skip, and a skip that lands
    /// past the buffer drops it.
    pub(crate) fn new(reader: R) -> Self {
        Self { reader: BufReader::with_capacity(4096, reader), unread: 0, seen: 0 }
    }

    /// The next segment's marker code, or `None` at the image data (SOS), the end (EOI), bytes
    /// that are not a marker, a bad length, the end of the file, or after [`MAX_SEGMENTS`]:
    /// nothing more to learn from the head then.
    ///
    /// Errors: I/O failures other than a short read.
    pub(crate) fn next(&mut self) -> std::io::Result<Option<u8>> {
        match self.advance() {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
            other => other,
        }
    }

    /// The current segment's body (at most 65533 bytes), read whole.
    ///
    /// Errors: I/O failures, a short read included (a cut file).
    pub(crate) fn body(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = vec![0u8; usize::from(self.unread)];
        self.reader.read_exact(&mut body)?;
        self.unread = 0;
        Ok(body)
    }

    fn advance(&mut self) -> std::io::Result<Option<u8>> {
        // `BufReader::seek_relative` keeps the buffer when the skip lands inside it.
        self.reader.seek_relative(i64::from(std::mem::take(&mut self.unread)))?;
        while self.seen < MAX_SEGMENTS {
            self.seen += 1;
            if self.byte()? != 0xFF {
                return Ok(None);
            }
            let mut marker = self.byte()?;
            while marker == 0xFF {
                marker = self.byte()?;
            }
            match marker {
                // Markers without a length.
                0x01 | 0xD0..=0xD8 => continue,
                // Start of scan or end of image: the head is over.
                0xDA | 0xD9 => return Ok(None),
                _ => {}
            }
            let mut len = [0u8; 2];
            self.reader.read_exact(&mut len)?;
            let Some(body) = u16::from_be_bytes(len).checked_sub(2) else { return Ok(None) };
            self.unread = body;
            return Ok(Some(marker));
        }
        Ok(None)
    }

    fn byte(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8; 1];
        self.reader.read_exact(&mut b)?;
        Ok(b[0])
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn markers(jpeg: &[u8]) -> Vec<u8> {
        let mut segments = Segments::new(Cursor::new(&jpeg[2..]));
        std::iter::from_fn(|| segments.next().unwrap()).collect()
    }

    #[test]
    fn segments_are_walked_up_to_the_scan_past_fill_bytes_and_lengthless_markers() {
        // APP0 (empty), fill bytes, RST0, COM "hi", then SOS and data that must not be read.
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 2, 0xFF, 0xFF, 0xFF, 0xD0, 0xFF, 0xFE, 0, 4, b'h', b'i', 0xFF, 0xDA];
        assert_eq!(markers(&jpeg), [0xE0, 0xFE]);
        let mut segments = Segments::new(Cursor::new(&jpeg[2..]));
        assert_eq!(segments.next().unwrap(), Some(0xE0));
        assert_eq!(segments.next().unwrap(), Some(0xFE));
        assert_eq!(segments.body().unwrap(), b"hi");
        assert_eq!(segments.next().unwrap(), None);
    }

    #[test]
    fn garbage_a_bad_length_a_cut_file_or_endless_segments_end_the_walk() {
        assert!(markers(&[0xFF, 0xD8, 0x00, 0x01]).is_empty());
        assert!(markers(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 1]).is_empty());
        assert_eq!(markers(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 9, 1]), [0xE0]);
        let mut endless = vec![0xFF, 0xD8];
        for _ in 0..5000 {
            endless.extend_from_slice(&[0xFF, 0xFE, 0, 2]);
        }
        assert_eq!(markers(&endless).len(), MAX_SEGMENTS);
    }
}
