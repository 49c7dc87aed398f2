// A plugin wrapping libsentencepiece behind a C interface. It is loaded with dlopen and
// RTLD_DEEPBIND: Debian's libsentencepiece carries its own copy of protobuf (3.14), which
// must not meet the system protobuf (3.21) that gRPC brings into the same process. This is
// also the only file that includes sentencepiece headers (they clash with Abseil).
#include <sentencepiece_processor.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* CopyOut(const std::string& s, size_t* len) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  *len = s.size();
  return out;
}

}  // namespace

extern "C" {

void* tessera_spm_load(const char* path, char* error, size_t error_len) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    std::snprintf(error, error_len, "%s", status.ToString().c_str());
    delete sp;
    return nullptr;
  }
  return sp;
}

void tessera_spm_free(void* handle) { delete static_cast<sentencepiece::SentencePieceProcessor*>(handle); }

void tessera_spm_free_buffer(void* buffer) { std::free(buffer); }

int32_t* tessera_spm_encode(void* handle, const char* text, size_t len, size_t* n) {
  std::vector<int> ids;
  static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, len), &ids);
  auto* out = static_cast<int32_t*>(std::malloc(sizeof(int32_t) * (ids.size() + 1)));
  for (size_t i = 0; i < ids.size(); ++i) out[i] = ids[i];
  *n = ids.size();
  return out;
}

char* tessera_spm_decode(void* handle, const int32_t* ids, size_t n, size_t* len) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  std::vector<int> in;
  in.reserve(n);
  const int size = sp->GetPieceSize();
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] >= 0 && ids[i] < size) in.push_back(ids[i]);
  }
  std::string text;
  sp->Decode(in, &text);
  return CopyOut(text, len);
}

char* tessera_spm_id_to_piece(void* handle, int32_t id, size_t* len) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  if (id < 0 || id >= sp->GetPieceSize()) return CopyOut("", len);
  return CopyOut(sp->IdToPiece(id), len);
}

int32_t tessera_spm_vocab_size(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize(); }
int32_t tessera_spm_bos_id(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->bos_id(); }
int32_t tessera_spm_eos_id(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->eos_id(); }

}  // extern "C"
