// Random GPTQ weights for the GPU tests, packed as quant/gptq/FORMAT.md describes (written
// independently of the loader), and their upload to a backend in either layout.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "runtime/common/dtype.h"
#include "tests/gpu/gpu_test_util.h"

namespace tessera::gpu_testing {

struct GptqCase {
  int bits;
  int64_t in, out;
  int64_t group_size;  // -1: one group over all inputs
  bool act_order;
  bool v1;
};

// A random GPTQ weight packed as FORMAT.md describes, written independently of the loader.
struct HostGptq {
  int bits = 4;
  int64_t in = 0, out = 0, group_size = 0;
  bool v1 = false;
  std::vector<int32_t> qweight, qzeros, perm;
  std::vector<uint16_t> scales;
};

inline void PutField(std::vector<int32_t>& words, int64_t word_index, int shift, uint32_t v) {
  uint32_t w = static_cast<uint32_t>(words[word_index]);
  w |= v << shift;
  words[word_index] = static_cast<int32_t>(w);
}

inline HostGptq RandomGptq(const GptqCase& c, std::mt19937& rng) {
  HostGptq h;
  h.bits = c.bits;
  h.in = c.in;
  h.out = c.out;
  h.group_size = c.group_size > 0 ? c.group_size : c.in;
  h.v1 = c.v1;
  const int b = c.bits;
  const uint32_t levels = 1u << b;
  const int64_t groups = c.in / h.group_size;
  const int64_t qw_rows = (c.in * b + 31) / 32, zw = (c.out * b + 31) / 32;
  h.qweight.assign(qw_rows * c.out, 0);
  h.qzeros.assign(groups * zw, 0);
  h.scales.resize(groups * c.out);
  std::uniform_int_distribution<uint32_t> level(0, levels - 1), zero(1, levels - 1);
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  for (int64_t i = 0; i < c.in; ++i) {
    for (int64_t j = 0; j < c.out; ++j) PutField(h.qweight, (i * b / 32) * c.out + j, (i * b) % 32, level(rng));
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t j = 0; j < c.out; ++j) {
      // v1 stores zero - 1 (and may hold all ones, read as 2^bits); v2 stores the zero.
      const uint32_t stored = c.v1 ? level(rng) : zero(rng);
      PutField(h.qzeros, g * zw + j * b / 32, (j * b) % 32, stored);
      h.scales[g * c.out + j] = F32ToF16(scale(rng));
    }
  }
  if (c.act_order) {
    h.perm.resize(c.in);
    std::iota(h.perm.begin(), h.perm.end(), 0);
    std::shuffle(h.perm.begin(), h.perm.end(), rng);
  }
  return h;
}

// The weight's arrays on one backend and the QuantizedWeight over them.
struct DeviceGptq {
  DeviceBuffer qweight, qzeros, scales, perm, packed;
  QuantizedWeight q;
};

inline QuantizedWeight HostView(const HostGptq& h) {
  QuantizedWeight q;
  q.bits = h.bits;
  q.group_size = static_cast<int>(h.group_size);
  q.in_features = h.in;
  q.out_features = h.out;
  q.qweight = h.qweight.data();
  q.qzeros = h.qzeros.data();
  q.scales = h.scales.data();
  q.zeros_minus_one = h.v1;
  return q;
}

// The weight as the model loader puts it on a backend: its own packed layout where it has
// one (then only perm besides), else the AutoGPTQ arrays.
inline DeviceGptq UploadPacked(Backend& b, const HostGptq& h) {
  DeviceGptq d;
  d.q = HostView(h);
  d.q.qweight = nullptr;
  d.q.qzeros = nullptr;
  d.q.scales = nullptr;
  d.packed = Must(b.PackQuantizedWeight(HostView(h), &d.q));
  if (!h.perm.empty()) {
    d.perm = PutRaw(b, h.perm);
    d.q.perm = static_cast<const int32_t*>(d.perm.data());
  }
  return d;
}

inline DeviceGptq Upload(Backend& b, const HostGptq& h) {
  DeviceGptq d;
  d.qweight = PutRaw(b, h.qweight);
  d.qzeros = PutRaw(b, h.qzeros);
  d.scales = PutRaw(b, h.scales);
  if (!h.perm.empty()) d.perm = PutRaw(b, h.perm);
  d.q.bits = h.bits;
  d.q.group_size = static_cast<int>(h.group_size);
  d.q.in_features = h.in;
  d.q.out_features = h.out;
  d.q.qweight = static_cast<const int32_t*>(d.qweight.data());
  d.q.qzeros = static_cast<const int32_t*>(d.qzeros.data());
  d.q.scales = static_cast<const uint16_t*>(d.scales.data());
  d.q.perm = h.perm.empty() ? nullptr : static_cast<const int32_t*>(d.perm.data());
  d.q.zeros_minus_one = h.v1;
  return d;
}

inline std::string Describe(const GptqCase& c, int64_t rows) {
  return std::to_string(c.bits) + "-bit " + std::to_string(rows) + "x" + std::to_string(c.in) + "->" +
         std::to_string(c.out) + " g" + std::to_string(c.group_size) + (c.act_order ? " act-order" : "") +
         (c.v1 ? " v1" : " v2");
}

}  // namespace tessera::gpu_testing
