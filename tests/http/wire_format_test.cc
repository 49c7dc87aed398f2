// Wire framing: response heads, chunks and SSE events.
#include "server/http/wire_format.h"

#include "gtest/gtest.h"

namespace tessera::http {
namespace {

TEST(WireFormatTest, SseEventPrefixesEveryLine) {
  EXPECT_EQ(FormatSseEvent("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(FormatSseEvent("one\ntwo"), "data: one\ndata: two\n\n");
  EXPECT_EQ(FormatSseEvent("one\r\ntwo\rthree"), "data: one\ndata: two\ndata: three\n\n");
  EXPECT_EQ(FormatSseEvent("trailing\n"), "data: trailing\n\n");
  EXPECT_EQ(FormatSseEvent(""), "data: \n\n");
  EXPECT_EQ(FormatSseEvent("a\n\nb"), "data: a\ndata: \ndata: b\n\n");
}

TEST(WireFormatTest, ChunkCarriesHexLength) {
  EXPECT_EQ(FormatChunk("hello"), "5\r\nhello\r\n");
  EXPECT_EQ(FormatChunk(std::string(26, 'x')), "1a\r\n" + std::string(26, 'x') + "\r\n");
  EXPECT_EQ(FormatChunk(""), "");  // an empty chunk would end the body early
}

TEST(WireFormatTest, ResponseHeadDropsLineBreaksFromHeaders) {
  std::string head = FormatResponseHead(404, {{"X-A", "1"}, {"X-Evil", "x\r\nSet-Cookie: y"}});
  EXPECT_EQ(head, "HTTP/1.1 404 Not Found\r\nX-A: 1\r\nX-Evil: xSet-Cookie: y\r\n\r\n");
  EXPECT_EQ(ReasonPhrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(ReasonPhrase(299), "Unknown");
}

TEST(WireFormatTest, TransportOwnsFramingHeaders) {
  EXPECT_TRUE(IsTransportHeader("content-length"));
  EXPECT_TRUE(IsTransportHeader("Transfer-Encoding"));
  EXPECT_TRUE(IsTransportHeader("CONNECTION"));
  EXPECT_FALSE(IsTransportHeader("Content-Type"));
}

}  // namespace
}  // namespace tessera::http
