#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::Status SamplingParams::Validate() const {
  if (!(temperature >= 0.0f) || temperature > 100.0f)
    return absl::InvalidArgumentError(absl::StrCat("temperature must be in [0, 100], got ", temperature));
  if (!(top_p > 0.0f && top_p <= 1.0f)) return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", top_p));
  if (top_k < -1) return absl::InvalidArgumentError(absl::StrCat("top_k must be -1, 0 or positive, got ", top_k));
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return absl::InvalidArgumentError(absl::StrCat("min_p must be in [0, 1], got ", min_p));
  if (!(repetition_penalty > 0.0f) || repetition_penalty > 10.0f)
    return absl::InvalidArgumentError(absl::StrCat("repetition_penalty must be in (0, 10], got ", repetition_penalty));
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    return absl::InvalidArgumentError(absl::StrCat("presence_penalty must be in [-2, 2], got ", presence_penalty));
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    return absl::InvalidArgumentError(absl::StrCat("frequency_penalty must be in [-2, 2], got ", frequency_penalty));
  if (logprobs < -1 || logprobs > 20) return absl::InvalidArgumentError(absl::StrCat("logprobs must be in [0, 20], got ", logprobs));
  return absl::OkStatus();
}

int32_t ArgMax(const float* logits, int32_t vocab) {
  int32_t best = 0;
  for (int32_t i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

SequenceSampler::SequenceSampler(const SamplingParams& params, const std::vector<int32_t>& prompt_ids)
    : params_(params) {
  if (params.seed.has_value()) {
    rng_.seed(*params.seed);
  } else {
    std::random_device rd;
    rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
  if (params.repetition_penalty != 1.0f) {
    for (int32_t id : prompt_ids) prompt_tokens_[id] = 1;
  }
}

void SequenceSampler::Record(int32_t token) { ++output_counts_[token]; }

void SequenceSampler::ApplyPenalties(std::vector<float>& logits) const {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (params_.repetition_penalty != 1.0f) {
    auto penalize = [&](int32_t id) {
      if (id < 0 || id >= vocab) return;
      float& l = logits[id];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    };
    for (const auto& [id, _] : prompt_tokens_) penalize(id);
    for (const auto& [id, _] : output_counts_) {
      if (!prompt_tokens_.count(id)) penalize(id);
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    for (const auto& [id, count] : output_counts_) {
      if (id < 0 || id >= vocab) continue;
      logits[id] -= params_.frequency_penalty * count + params_.presence_penalty;
    }
  }
}

SampleResult SequenceSampler::Sample(const float* raw, int32_t vocab) {
  SampleResult result;
  std::vector<float> logits(raw, raw + vocab);
  ApplyPenalties(logits);
  const bool truncates = (params_.top_k > 0 && params_.top_k < vocab) || params_.top_p < 1.0f || params_.min_p > 0.0f;
  if (params_.greedy()) {
    result.token = ArgMax(logits.data(), vocab);
  } else if (!truncates) {
    // The whole distribution at temperature T: no ordering needed.
    const float inv_t = 1.0f / params_.temperature;
    const float mx = logits[ArgMax(logits.data(), vocab)];
    std::vector<double> probs(vocab);
    double total = 0.0;
    for (int32_t i = 0; i < vocab; ++i) total += probs[i] = std::exp(static_cast<double>((logits[i] - mx) * inv_t));
    std::uniform_real_distribution<double> uniform(0.0, total);
    double r = uniform(rng_);
    result.token = vocab - 1;
    for (int32_t i = 0; i < vocab; ++i) {
      r -= probs[i];
      if (r < 0) {
        result.token = i;
        break;
      }
    }
  } else {
    // Candidates sorted by logit, cut by top-k, then probabilities at temperature T,
    // then top-p and min-p cuts, renormalised.
    std::vector<int32_t> idx(vocab);
    std::iota(idx.begin(), idx.end(), 0);
    size_t keep = vocab;
    if (params_.top_k > 0 && params_.top_k < vocab) keep = params_.top_k;
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    if (keep < idx.size()) {
      std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
      idx.resize(keep);
    } else {
      std::sort(idx.begin(), idx.end(), by_logit);
    }
    const float inv_t = 1.0f / params_.temperature;
    const float mx = logits[idx[0]];
    std::vector<double> probs(idx.size());
    double sum = 0.0;
    for (size_t i = 0; i < idx.size(); ++i) {
      probs[i] = std::exp(static_cast<double>((logits[idx[i]] - mx) * inv_t));
      sum += probs[i];
    }
    for (double& p : probs) p /= sum;
    size_t n = probs.size();
    if (params_.top_p < 1.0f) {
      double cum = 0.0;
      size_t cut = n;
      for (size_t i = 0; i < n; ++i) {
        cum += probs[i];
        if (cum >= params_.top_p) {
          cut = i + 1;
          break;
        }
      }
      n = cut;
    }
    if (params_.min_p > 0.0f) {
      const double threshold = params_.min_p * probs[0];
      size_t cut = 1;
      while (cut < n && probs[cut] >= threshold) ++cut;
      n = cut;
    }
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) total += probs[i];
    std::uniform_real_distribution<double> uniform(0.0, total);
    double r = uniform(rng_);
    size_t chosen = n - 1;
    for (size_t i = 0; i < n; ++i) {
      r -= probs[i];
      if (r < 0) {
        chosen = i;
        break;
      }
    }
    result.token = idx[chosen];
  }
  if (params_.logprobs >= 0 || params_.collect_stats) {
    // Statistics of the model's own distribution (before penalties and temperature).
    float mx = raw[ArgMax(raw, vocab)];
    double z = 0.0, weighted = 0.0;
    for (int32_t i = 0; i < vocab; ++i) {
      const double e = std::exp(static_cast<double>(raw[i] - mx));
      z += e;
      weighted += e * static_cast<double>(raw[i] - mx);
    }
    const double log_z = mx + std::log(z);
    result.logprob = static_cast<float>(raw[result.token] - log_z);
    // H = -Σ p (l - m - log Z) = log Z - Σ p (l - m), with p = e / Z.
    result.entropy = static_cast<float>(std::log(z) - weighted / z);
    result.top1_prob = static_cast<float>(1.0 / z);
    if (params_.logprobs > 0) {  // top-N alternatives
      std::vector<int32_t> idx(vocab);
      std::iota(idx.begin(), idx.end(), 0);
      const size_t k = std::min<size_t>(params_.logprobs, vocab);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                        [&](int32_t a, int32_t b) { return raw[a] > raw[b] || (raw[a] == raw[b] && a < b); });
      for (size_t i = 0; i < k; ++i) result.top.push_back({idx[i], static_cast<float>(raw[idx[i]] - log_z)});
    }
  }
  Record(result.token);
  return result;
}

}  // namespace tessera
