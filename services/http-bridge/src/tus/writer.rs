//! Bytes of a tus upload onto `upload.part`: the body of a PATCH, after the pending bytes of the
//! previous one, cut into parts of exactly the media service's `partSize` (numbered by their
//! position in the file, so a part sent again replaces the earlier one), with a few in flight.
//! Memory: the part being filled plus `parts_in_flight` parts, whatever the request size.

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use mediabus_contracts::requests::{PartAccepted, headers as part_headers};
use mediabus_contracts::subjects;
use mediabus_rpc::{RpcClient, RpcError};

/// Sends full parts as they fill; keeps the rest for the caller to store or send last.
pub struct PartWriter {
    rpc: RpcClient,
    nats: async_nats::HeaderMap,
    upload_id: String,
    part_size: usize,
    next_part: u32,
    filling: BytesMut,
    max_in_flight: usize,
    in_flight: FuturesUnordered<futures_util::future::BoxFuture<'static, Result<PartAccepted, RpcError>>>,
}

impl PartWriter {
    /// A writer whose next part is `next_part`, already holding `pending` (fewer than
    /// `part_size` bytes).
    pub fn new(
        rpc: RpcClient,
        nats: async_nats::HeaderMap,
        upload_id: String,
        part_size: usize,
        next_part: u32,
        pending: &[u8],
        max_in_flight: usize,
    ) -> Self {
        let mut filling = BytesMut::with_capacity(part_size);
        filling.extend_from_slice(pending);
        Self {
            rpc,
            nats,
            upload_id,
            part_size,
            next_part,
            filling,
            max_in_flight: max_in_flight.max(1),
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Appends `data`, sending each part as it fills.
    pub async fn push(&mut self, mut data: &[u8]) -> Result<(), RpcError> {
        while !data.is_empty() {
            let take = (self.part_size - self.filling.len()).min(data.len());
            self.filling.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.filling.len() == self.part_size {
                let part = std::mem::replace(&mut self.filling, BytesMut::with_capacity(self.part_size));
                self.send(part.freeze()).await?;
            }
        }
        Ok(())
    }

    /// Sends what is left as the last (short) part, if anything.
    pub async fn send_rest(&mut self) -> Result<(), RpcError> {
        if !self.filling.is_empty() {
            let last = std::mem::take(&mut self.filling);
            self.send(last.freeze()).await?;
        }
        Ok(())
    }

    /// Waits until every sent part is acknowledged.
    pub async fn flush(&mut self) -> Result<(), RpcError> {
        while let Some(reply) = self.in_flight.next().await {
            reply?;
        }
        Ok(())
    }

    /// The bytes after the last full part (taken: the writer is done with them).
    pub fn take_rest(&mut self) -> Bytes {
        std::mem::take(&mut self.filling).freeze()
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), RpcError> {
        while self.in_flight.len() >= self.max_in_flight {
            if let Some(reply) = self.in_flight.next().await {
                reply?;
            }
        }
        let mut headers = self.nats.clone();
        headers.insert(part_headers::UPLOAD_ID, self.upload_id.as_str());
        headers.insert(part_headers::PART_NUMBER, self.next_part.to_string().as_str());
        self.next_part += 1;
        let rpc = self.rpc.clone();
        self.in_flight.push(Box::pin(async move { rpc.call_raw(subjects::UPLOAD_PART, bytes, headers).await }));
        Ok(())
    }
}
