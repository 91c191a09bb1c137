//! What one send to the internal queue may carry — SQS's limits, stated here once —
//! and the batches that keep to them.
//!
//! - A `SendMessageBatch` holds at most [`MAX_BATCH_ENTRIES`] entries and at most
//!   [`MAX_BATCH_BYTES`] of messages in all. A request over either is refused whole
//!   (`TooManyEntriesInBatchRequest`, `BatchRequestTooLong`): a sender fault that no
//!   resend cures. Ten near-limit jobs (one large order observed by ten
//!   integrations) are over the byte limit, so batches are cut by bytes as well as
//!   by count.
//! - One message is at most the queue's `MaximumMessageSize`: the template keeps the
//!   default, [`MAX_MESSAGE_BYTES`]. A job is sized to fit it
//!   ([`crate::job::MAX_INLINE_PAYLOAD`]).
//! - A message can be delayed ([`crate::ports::OutgoingJob::delay`]) by at most
//!   [`MAX_DELAY`]; a longer wait is several sends.
//!
//! A message's size is its body plus its message attributes; Herald sets no
//! attributes, so it is the body's UTF-8 length.
//!
//! See <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html>
//! (both the per-message and the total limit of a batch are 1 MiB),
//! <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html>
//! (`MaximumMessageSize`: 1 KiB to 1 MiB, default 256 KiB) and
//! <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html>.

use std::time::Duration;

use crate::ports::OutgoingJob;

/// Most entries in one `SendMessageBatch`.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Most bytes of messages, all entries together, in one `SendMessageBatch`.
pub const MAX_BATCH_BYTES: usize = 1_048_576;

/// Largest message the internal queue takes: its `MaximumMessageSize`, which the
/// template leaves at SQS's default.
pub const MAX_MESSAGE_BYTES: usize = 262_144;

/// Longest `DelaySeconds` of a message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// The size SQS counts for a job's message.
pub fn message_bytes(job: &OutgoingJob) -> usize {
    job.body.len()
}

/// `jobs` cut, in order, into consecutive batches that each keep to
/// [`MAX_BATCH_ENTRIES`] and [`MAX_BATCH_BYTES`]: each batch is filled until the next
/// job would not fit. A job larger than the byte limit on its own goes alone (the
/// queue then refuses that job, and only it).
pub fn batches(jobs: &[OutgoingJob]) -> Vec<&[OutgoingJob]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, job) in jobs.iter().enumerate() {
        let size = message_bytes(job);
        let count = i - start;
        if count > 0 && (count == MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES) {
            out.push(&jobs[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < jobs.len() {
        out.push(&jobs[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(sizes: &[usize]) -> Vec<OutgoingJob> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| OutgoingJob {
                entry_id: i.to_string(),
                body: "x".repeat(n),
                delay: Duration::ZERO,
            })
            .collect()
    }

    fn shape(batches: &[&[OutgoingJob]]) -> Vec<Vec<String>> {
        batches
            .iter()
            .map(|b| b.iter().map(|j| j.entry_id.clone()).collect())
            .collect()
    }

    #[test]
    fn small_jobs_go_ten_to_a_batch() {
        let jobs = jobs(&[100; 23]);
        let lens: Vec<usize> = batches(&jobs).iter().map(|b| b.len()).collect();
        assert_eq!(lens, [10, 10, 3]);
    }

    #[test]
    fn near_limit_jobs_are_cut_by_bytes_and_every_batch_keeps_both_limits() {
        // Ten jobs just under the per-message limit: four fit a batch's bytes.
        let jobs = jobs(&[MAX_MESSAGE_BYTES - 1; 10]);
        let cut = batches(&jobs);
        assert_eq!(cut.iter().map(|b| b.len()).collect::<Vec<_>>(), [4, 4, 2]);
        for b in &cut {
            assert!(b.iter().map(message_bytes).sum::<usize>() <= MAX_BATCH_BYTES);
        }
        assert_eq!(cut.iter().map(|b| b.len()).sum::<usize>(), 10);
    }

    #[test]
    fn a_batch_is_filled_to_exactly_its_byte_limit_and_order_is_kept() {
        let quarter = MAX_BATCH_BYTES / 4;
        let jobs = jobs(&[quarter, quarter, quarter, quarter, 1, quarter * 4 + 1, 1]);
        assert_eq!(
            shape(&batches(&jobs)),
            [vec!["0", "1", "2", "3"], vec!["4"], vec!["5"], vec!["6"]]
        );
    }

    #[test]
    fn nothing_makes_no_batch() {
        assert!(batches(&[]).is_empty());
    }
}
