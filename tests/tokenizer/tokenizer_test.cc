// Tokenizer behaviour: Meta's Llama-2 encodings, byte fallback, incremental detokenizing
// that never splits a UTF-8 character, and chat templates.
#include "runtime/tokenizer/tokenizer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/detokenizer.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

class Llama2TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = LoadSentencePieceFile(testing::Llama2TokenizerPath());
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = std::move(*t);
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(Llama2TokenizerTest, MatchesMetaReferenceEncodings) {
  EXPECT_EQ(tok_->vocab_size(), 32000);
  EXPECT_EQ(tok_->Encode("", true), (std::vector<int32_t>{1}));
  EXPECT_EQ(tok_->Encode("Once upon a time", true), (std::vector<int32_t>{1, 9038, 2501, 263, 931}));
  EXPECT_EQ(tok_->Encode("I believe the meaning of life is", true),
            (std::vector<int32_t>{1, 306, 4658, 278, 6593, 310, 2834, 338}));
  EXPECT_EQ(tok_->Encode("Simply put, the theory of relativity states that ", true),
            (std::vector<int32_t>{1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871}));
  EXPECT_EQ(tok_->Encode("A brief message congratulating the team on the launch:\n\n        Hi everyone,\n\n        I just ", true),
            (std::vector<int32_t>{1, 319, 11473, 2643, 378, 629, 271, 18099, 278, 3815, 373, 278, 6826, 29901, 13, 13,
                                  4706, 6324, 14332, 29892, 13, 13, 4706, 306, 925, 29871}));
  EXPECT_EQ(tok_->Encode("Translate English to French:\n\n        sea otter => loutre de mer\n        peppermint => "
                         "menthe poivrée\n        plush girafe => girafe peluche\n        cheese =>",
                         true),
            (std::vector<int32_t>{1,    4103, 9632, 4223, 304,  5176, 29901, 13,   13,   4706, 7205, 4932, 357,
                                  1149, 301,  449,  276,  316,  2778, 13,    4706, 1236, 407,  837,  524,  1149,
                                  6042, 354,  772,  440,  29878, 1318, 13,   4706, 715,  1878, 330,  3055, 1725,
                                  1149, 330,  3055, 1725, 4639, 28754, 13,  4706, 923,  968,  1149}));
}

TEST_F(Llama2TokenizerTest, ByteFallbackRoundTripsNonAsciiText) {
  for (const std::string text : {"naïve café — 東京 🚀 Ωμέγα", "emoji only 🤖🧠", "ąčęėįšųūž 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"}) {
    std::vector<int32_t> ids = tok_->Encode(text, false);
    EXPECT_EQ(tok_->Decode(ids), text);
  }
  // The rocket is not in the vocabulary: it must come out as byte pieces <0xF0>...
  std::vector<int32_t> ids = tok_->Encode("🚀", false);
  int bytes = 0;
  for (int32_t id : ids) bytes += tok_->IdToPiece(id).rfind("<0x", 0) == 0;
  EXPECT_EQ(bytes, 4);
}

TEST_F(Llama2TokenizerTest, IncrementalDetokenizerNeverEmitsHalfACharacter) {
  const std::string text = "Hello 東京 🚀 world, ça va? 🤖🧠 end";
  std::vector<int32_t> prompt = tok_->Encode("Say:", true);
  std::vector<int32_t> ids = tok_->Encode(text, false);
  IncrementalDetokenizer detok(tok_.get(), prompt);
  std::string streamed;
  for (int32_t id : ids) {
    std::string delta = detok.Append(id);
    EXPECT_FALSE(EndsWithIncompleteUtf8(delta)) << "delta ends mid-character";
    EXPECT_EQ(delta.find("\xEF\xBF\xBD"), std::string::npos) << "replacement character leaked";
    streamed += delta;
  }
  streamed += detok.Flush();
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), ids.begin(), ids.end());
  EXPECT_EQ("Say:" + streamed, tok_->Decode(all));
}

TEST_F(Llama2TokenizerTest, DetokenizerKeepsTheLeadingSpaceOfTheFirstNewWord) {
  IncrementalDetokenizer detok(tok_.get(), tok_->Encode("Once upon", true));
  std::string out;
  for (int32_t id : tok_->Encode("a time", false)) out += detok.Append(id);
  out += detok.Flush();
  EXPECT_EQ(out, " a time");
}

TEST_F(Llama2TokenizerTest, FlushEmitsAnUnfinishedByteSequence) {
  IncrementalDetokenizer detok(tok_.get(), {1});
  std::vector<int32_t> ids = tok_->Encode("🚀", false);
  std::string out;
  for (size_t i = 0; i + 1 < ids.size(); ++i) out += detok.Append(ids[i]);
  EXPECT_EQ(out, "");
  EXPECT_FALSE(detok.Flush().empty());
}

TEST_F(Llama2TokenizerTest, Llama2ChatTemplateMatchesMetaFormat) {
  std::vector<ChatMessage> msgs = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  auto ids = ApplyChatTemplate(ChatTemplateKind::kLlama2, *tok_, msgs);
  ASSERT_TRUE(ids.ok()) << ids.status();
  std::vector<int32_t> expect = tok_->Encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! ", true);
  expect.push_back(tok_->eos_id());
  auto second = tok_->Encode("[INST] Bye [/INST]", true);
  expect.insert(expect.end(), second.begin(), second.end());
  EXPECT_EQ(*ids, expect);
}

TEST_F(Llama2TokenizerTest, ChatTemplatesRejectBadConversations) {
  EXPECT_FALSE(ApplyChatTemplate(ChatTemplateKind::kLlama2, *tok_, {}).ok());
  EXPECT_THAT(ApplyChatTemplate(ChatTemplateKind::kLlama2, *tok_, {{"robot", "x"}}).status().message(), HasSubstr("robot"));
  EXPECT_FALSE(ApplyChatTemplate(ChatTemplateKind::kLlama2, *tok_, {{"user", "a"}, {"assistant", "b"}}).ok());
}

TEST(TokenizerTest, DefaultModelTokenizerAddsBosPerConfig) {
  auto t = LoadTokenizer(testing::DefaultModelDir());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->add_bos());
  EXPECT_EQ((*t)->vocab_size(), 512);
  EXPECT_EQ((*t)->Encode("Once upon a time", (*t)->add_bos()), (std::vector<int32_t>{1, 403, 407, 261, 378}));
}

TEST(TokenizerTest, PlainChatTemplateForModelsWithoutOne) {
  EXPECT_EQ(DetectChatTemplate(testing::DefaultModelDir()), ChatTemplateKind::kPlain);
  auto t = LoadTokenizer(testing::DefaultModelDir());
  auto ids = ApplyChatTemplate(ChatTemplateKind::kPlain, **t, {{"user", "Tell a story"}});
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (*t)->Encode("User: Tell a story\nAssistant:", true));
}

TEST(TokenizerTest, MissingOrCorruptTokenizerIsAClearError) {
  EXPECT_EQ(LoadSentencePieceFile("/nonexistent/tokenizer.model").status().code(), absl::StatusCode::kNotFound);
  auto bad = LoadSentencePieceFile(testing::DefaultModelDir() + "/config.json");
  EXPECT_THAT(bad.status().message(), HasSubstr("not a sentencepiece model"));
}

TEST(Utf8Test, DetectsIncompleteSequences) {
  EXPECT_FALSE(EndsWithIncompleteUtf8("abc"));
  EXPECT_FALSE(EndsWithIncompleteUtf8("東"));
  EXPECT_TRUE(EndsWithIncompleteUtf8(std::string("\xE6\x9D")));
  EXPECT_TRUE(EndsWithIncompleteUtf8(std::string("a\xF0\x9F\x9A")));
  EXPECT_TRUE(EndsWithIncompleteUtf8("x\xEF\xBF\xBD"));
}

}  // namespace
}  // namespace tessera
