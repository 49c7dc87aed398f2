// What one scheduler step asks the model runner to do: a plain struct with flat arrays
// (token ids, block tables) that the runner can copy to the device as they are.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tessera {

struct ScheduledSequence {
  uint64_t id = 0;
  // Position of the first token fed this step; equals the sequence's computed tokens.
  int start_position = 0;
  int num_tokens = 0;
  // The chunk reaches the end of the sequence's known tokens: the runner samples one token
  // from the logits of its last position. False for an unfinished prefill chunk.
  bool sample = false;
  // True when the chunk starts a sequence the runner has no state for: a new admission or
  // a preempted sequence starting its recompute (start_position may be > 0 on a prefix hit).
  bool is_new = false;
  int token_offset = 0;  // into SchedulerOutput::token_ids
  int block_offset = 0;  // into SchedulerOutput::block_tables
  int num_blocks = 0;
};

struct SchedulerOutput {
  // Decodes first, then continuing prefill chunks, then new admissions.
  std::vector<ScheduledSequence> sequences;
  // Concatenated token ids to feed, sequences[i] at [token_offset, token_offset+num_tokens).
  std::vector<int32_t> token_ids;
  // Concatenated full block tables (a copy; position p of a sequence lives in block
  // table[p / block_size] at slot p % block_size).
  std::vector<int32_t> block_tables;
  int num_batched_tokens = 0;
  // Sequences preempted this step: their blocks are gone; the runner drops their state.
  std::vector<uint64_t> preempted_ids;
  // Sequences that ended (finished, stopped or aborted) since the previous step.
  std::vector<uint64_t> finished_ids;

  std::span<const int32_t> Tokens(const ScheduledSequence& s) const {
    return std::span<const int32_t>(token_ids).subspan(s.token_offset, s.num_tokens);
  }
  std::span<const int32_t> BlockTable(const ScheduledSequence& s) const {
    return std::span<const int32_t>(block_tables).subspan(s.block_offset, s.num_blocks);
  }
  bool empty() const { return sequences.empty(); }
};

}  // namespace tessera
