#include "runtime/model/gptq_loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace tessera {
namespace {

absl::Status Bad(const WeightStore& store, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(store.dir(), ": ", what));
}

absl::StatusOr<const TensorInfo*> GetTyped(const WeightStore& store, const std::string& name,
                                           const std::vector<int64_t>& shape, DType dtype, const std::string& why) {
  ASSIGN_OR_RETURN(const TensorInfo* t, store.Get(name));
  if (t->dtype != dtype)
    return Bad(store, absl::StrCat("tensor '", name, "' has dtype ", std::string(DTypeName(t->dtype)), ", expected ",
                                   std::string(DTypeName(dtype))));
  if (t->shape != shape)
    return Bad(store, absl::StrCat("tensor '", name, "' has shape ", ShapeString(t->shape), ", expected ",
                                   ShapeString(shape), " (", why, ")"));
  return t;
}

template <typename T>
std::vector<T> CopyOut(const TensorInfo& t) {
  std::vector<T> v(t.nbytes / sizeof(T));
  if (t.nbytes) std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

}  // namespace

QuantizedWeight GptqHostWeight::View() const {
  QuantizedWeight q;
  q.bits = bits;
  q.group_size = group_size;
  q.in_features = in_features;
  q.out_features = out_features;
  q.qweight = qweight.data();
  q.qzeros = qzeros.data();
  q.scales = scales.data();
  q.perm = perm.empty() ? nullptr : perm.data();
  q.zeros_minus_one = zeros_minus_one;
  return q;
}

absl::StatusOr<GptqHostWeight> LoadGptqLinear(const WeightStore& store, const std::string& prefix, int64_t in,
                                              int64_t out, const GptqConfig& config) {
  RETURN_IF_ERROR(config.Validate());
  const int bits = config.bits;
  const int64_t gs = config.EffectiveGroupSize(in);
  if (in % gs != 0)
    return Bad(store, absl::StrCat(prefix, ": group_size ", gs, " does not divide in_features ", in));
  const int64_t groups = in / gs;
  const std::string packing = absl::StrCat(bits, "-bit, in_features ", in, ", out_features ", out, ", ", groups,
                                           groups == 1 ? " group" : " groups");
  ASSIGN_OR_RETURN(const TensorInfo* qw, GetTyped(store, prefix + ".qweight", {GptqPackedWords(in, bits), out},
                                                  DType::kI32, packing));
  ASSIGN_OR_RETURN(const TensorInfo* qz, GetTyped(store, prefix + ".qzeros", {groups, GptqPackedWords(out, bits)},
                                                  DType::kI32, packing));
  ASSIGN_OR_RETURN(const TensorInfo* sc, GetTyped(store, prefix + ".scales", {groups, out}, DType::kF16, packing));

  GptqHostWeight w;
  w.bits = bits;
  w.group_size = static_cast<int>(gs);
  w.in_features = in;
  w.out_features = out;
  w.zeros_minus_one = config.format == GptqCheckpointFormat::kGptqV1;
  w.qzeros = CopyOut<int32_t>(*qz);
  w.scales = CopyOut<uint16_t>(*sc);

  std::vector<int32_t> g_idx(static_cast<size_t>(in));
  if (store.Contains(prefix + ".g_idx")) {
    ASSIGN_OR_RETURN(const TensorInfo* gi, GetTyped(store, prefix + ".g_idx", {in}, DType::kI32, "one group per input"));
    g_idx = CopyOut<int32_t>(*gi);
    for (int64_t i = 0; i < in; ++i) {
      if (g_idx[i] < 0 || g_idx[i] >= groups)
        return Bad(store, absl::StrCat(prefix, ".g_idx[", i, "] = ", g_idx[i], " is outside [0, ", groups, ")"));
    }
  } else if (config.desc_act) {
    return Bad(store, absl::StrCat(prefix, ": desc_act (act-order) checkpoint lacks '", prefix, ".g_idx'"));
  } else {
    for (int64_t i = 0; i < in; ++i) g_idx[i] = static_cast<int32_t>(i / gs);
  }

  bool contiguous = true;
  for (int64_t i = 0; i < in && contiguous; ++i) contiguous = g_idx[i] == i / gs;
  if (contiguous) {
    w.qweight = CopyOut<int32_t>(*qw);
    return w;
  }
  // Act-order: sort input rows by group so each group is one contiguous run of gs rows;
  // the matmul then gathers activations through perm.
  std::vector<int32_t> perm(static_cast<size_t>(in));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return g_idx[a] < g_idx[b]; });
  for (int64_t j = 0; j < in; ++j) {
    if (g_idx[perm[j]] != j / gs)
      return Bad(store, absl::StrCat(prefix, ".g_idx: group ", j / gs, " does not hold exactly ", gs,
                                     " input features"));
  }
  const std::vector<uint32_t> values = GptqUnpackRows(static_cast<const int32_t*>(qw->data), in, out, bits);
  std::vector<uint32_t> reordered(values.size());
  for (int64_t j = 0; j < in; ++j)
    std::copy_n(values.begin() + perm[j] * out, out, reordered.begin() + j * out);
  w.qweight = GptqPackRows(reordered, in, out, bits);
  w.perm = std::move(perm);
  return w;
}

absl::StatusOr<GptqHostWeight> ConcatGptqOutFeatures(const GptqHostWeight& a, const GptqHostWeight& b) {
  if (a.bits != b.bits || a.group_size != b.group_size || a.in_features != b.in_features ||
      a.zeros_minus_one != b.zeros_minus_one)
    return absl::InvalidArgumentError("cannot stack GPTQ linears of different bits, group size or inputs");
  if (a.perm != b.perm)
    return absl::InvalidArgumentError(
        "cannot stack GPTQ linears whose g_idx differ (act-order with different input orders)");
  const int bits = a.bits;
  const int64_t in = a.in_features, groups = a.num_groups(), out = a.out_features + b.out_features;
  GptqHostWeight w = a;
  w.out_features = out;
  // qweight packs along the input, so its columns concatenate as they are.
  const int64_t rows = GptqPackedWords(in, bits);
  w.qweight.assign(static_cast<size_t>(rows * out), 0);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(a.qweight.begin() + r * a.out_features, a.out_features, w.qweight.begin() + r * out);
    std::copy_n(b.qweight.begin() + r * b.out_features, b.out_features, w.qweight.begin() + r * out + a.out_features);
  }
  w.scales.assign(static_cast<size_t>(groups * out), 0);
  for (int64_t g = 0; g < groups; ++g) {
    std::copy_n(a.scales.begin() + g * a.out_features, a.out_features, w.scales.begin() + g * out);
    std::copy_n(b.scales.begin() + g * b.out_features, b.out_features, w.scales.begin() + g * out + a.out_features);
  }
  // qzeros pack along the output: a's last word may be partial, so repack.
  std::vector<uint32_t> za = GptqUnpackCols(a.qzeros.data(), groups, a.out_features, bits);
  std::vector<uint32_t> zb = GptqUnpackCols(b.qzeros.data(), groups, b.out_features, bits);
  std::vector<uint32_t> z(static_cast<size_t>(groups * out));
  for (int64_t g = 0; g < groups; ++g) {
    std::copy_n(za.begin() + g * a.out_features, a.out_features, z.begin() + g * out);
    std::copy_n(zb.begin() + g * b.out_features, b.out_features, z.begin() + g * out + a.out_features);
  }
  w.qzeros = GptqPackCols(z, groups, out, bits);
  return w;
}

absl::StatusOr<std::unique_ptr<GptqDeviceWeight>> GptqDeviceWeight::Upload(Backend& backend, const GptqHostWeight& h) {
  auto d = std::unique_ptr<GptqDeviceWeight>(new GptqDeviceWeight());
  auto copy = [&](const void* src, size_t bytes, DeviceBuffer* buf) -> absl::Status {
    ASSIGN_OR_RETURN(*buf, backend.Allocate(bytes));
    d->bytes_ += bytes;
    return backend.CopyToDevice(buf->data(), src, bytes);
  };
  d->weight_ = h.View();
  d->weight_.qweight = nullptr;
  d->weight_.qzeros = nullptr;
  d->weight_.scales = nullptr;
  d->weight_.perm = nullptr;
  // A backend with its own layout for this weight needs only that (and perm).
  ASSIGN_OR_RETURN(d->packed_, backend.PackQuantizedWeight(h.View(), &d->weight_));
  d->bytes_ += d->packed_.bytes();
  if (d->packed_.data() == nullptr) {
    RETURN_IF_ERROR(copy(h.qweight.data(), h.qweight.size() * sizeof(int32_t), &d->qweight_));
    RETURN_IF_ERROR(copy(h.qzeros.data(), h.qzeros.size() * sizeof(int32_t), &d->qzeros_));
    RETURN_IF_ERROR(copy(h.scales.data(), h.scales.size() * sizeof(uint16_t), &d->scales_));
    d->weight_.qweight = static_cast<const int32_t*>(d->qweight_.data());
    d->weight_.qzeros = static_cast<const int32_t*>(d->qzeros_.data());
    d->weight_.scales = static_cast<const uint16_t*>(d->scales_.data());
  }
  if (!h.perm.empty()) {
    RETURN_IF_ERROR(copy(h.perm.data(), h.perm.size() * sizeof(int32_t), &d->perm_));
    d->weight_.perm = static_cast<const int32_t*>(d->perm_.data());
  }
  return d;
}

}  // namespace tessera
