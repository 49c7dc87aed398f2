// Loads the sentencepiece plugin (spm_shim.cc) with RTLD_DEEPBIND and adapts its C
// interface to SpModel.
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <mutex>

namespace tessera {
namespace sp_detail {
namespace {

struct Api {
  void* (*load)(const char*, char*, size_t);
  void (*free_model)(void*);
  void (*free_buffer)(void*);
  int32_t* (*encode)(void*, const char*, size_t, size_t*);
  char* (*decode)(void*, const int32_t*, size_t, size_t*);
  char* (*id_to_piece)(void*, int32_t, size_t*);
  int32_t (*vocab_size)(void*);
  int32_t (*bos_id)(void*);
  int32_t (*eos_id)(void*);
};

std::string ExeDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, n);
  return p.substr(0, p.find_last_of('/'));
}

// The plugin: $TESSERA_SPM_PLUGIN, else lib/ beside the binary's folder, else the build tree.
const Api* LoadApi(std::string* error) {
  static std::once_flag once;
  static Api api;
  static bool ok = false;
  static std::string load_error;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("TESSERA_SPM_PLUGIN")) candidates.push_back(env);
    candidates.push_back(ExeDir() + "/../lib/libtessera_spm.so");
    candidates.push_back(ExeDir() + "/lib/libtessera_spm.so");
    candidates.push_back(TESSERA_SPM_PLUGIN_PATH);
    void* h = nullptr;
    for (const auto& c : candidates) {
      h = ::dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (h) break;
      load_error += c + ": " + ::dlerror() + "; ";
    }
    if (!h) return;
    auto sym = [&](const char* name) { return ::dlsym(h, name); };
    api.load = reinterpret_cast<decltype(api.load)>(sym("tessera_spm_load"));
    api.free_model = reinterpret_cast<decltype(api.free_model)>(sym("tessera_spm_free"));
    api.free_buffer = reinterpret_cast<decltype(api.free_buffer)>(sym("tessera_spm_free_buffer"));
    api.encode = reinterpret_cast<decltype(api.encode)>(sym("tessera_spm_encode"));
    api.decode = reinterpret_cast<decltype(api.decode)>(sym("tessera_spm_decode"));
    api.id_to_piece = reinterpret_cast<decltype(api.id_to_piece)>(sym("tessera_spm_id_to_piece"));
    api.vocab_size = reinterpret_cast<decltype(api.vocab_size)>(sym("tessera_spm_vocab_size"));
    api.bos_id = reinterpret_cast<decltype(api.bos_id)>(sym("tessera_spm_bos_id"));
    api.eos_id = reinterpret_cast<decltype(api.eos_id)>(sym("tessera_spm_eos_id"));
    ok = api.load && api.free_model && api.free_buffer && api.encode && api.decode && api.id_to_piece &&
         api.vocab_size && api.bos_id && api.eos_id;
    if (!ok) load_error = "the sentencepiece plugin lacks its entry points";
  });
  if (!ok) {
    *error = "cannot load the sentencepiece plugin: " + load_error;
    return nullptr;
  }
  return &api;
}

class SpModelImpl final : public SpModel {
 public:
  SpModelImpl(const Api* api, void* handle) : api_(api), handle_(handle) {}
  ~SpModelImpl() override { api_->free_model(handle_); }

  std::vector<int32_t> Encode(const std::string& text) const override {
    size_t n = 0;
    int32_t* ids = api_->encode(handle_, text.data(), text.size(), &n);
    std::vector<int32_t> out(ids, ids + n);
    api_->free_buffer(ids);
    return out;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    size_t len = 0;
    char* s = api_->decode(handle_, ids.data(), ids.size(), &len);
    std::string out(s, len);
    api_->free_buffer(s);
    return out;
  }
  std::string IdToPiece(int32_t id) const override {
    size_t len = 0;
    char* s = api_->id_to_piece(handle_, id, &len);
    std::string out(s, len);
    api_->free_buffer(s);
    return out;
  }
  int32_t vocab_size() const override { return api_->vocab_size(handle_); }
  int32_t bos_id() const override { return api_->bos_id(handle_); }
  int32_t eos_id() const override { return api_->eos_id(handle_); }

 private:
  const Api* api_;
  void* handle_;
};

}  // namespace

std::unique_ptr<SpModel> LoadSpModel(const std::string& path, std::string* error) {
  const Api* api = LoadApi(error);
  if (!api) return nullptr;
  char buf[512] = {0};
  void* h = api->load(path.c_str(), buf, sizeof(buf));
  if (!h) {
    *error = buf;
    return nullptr;
  }
  return std::make_unique<SpModelImpl>(api, h);
}

}  // namespace sp_detail
}  // namespace tessera
