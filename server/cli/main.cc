// The tessera binary: one entry point, subcommands dispatched by name.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "server/cli/commands.h"

namespace {

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: tessera <command> [flags]\n\n"
               "commands:\n"
               "  serve      run the server (gRPC and OpenAI-compatible HTTP)\n"
               "  generate   generate text from a prompt (or a JSONL file of prompts)\n"
               "  quantize   quantize a model to a GPTQ checkpoint (gptq or rtn)\n"
               "  perplexity perplexity of a model over a text file\n\n"
               "Run 'tessera <command> --help' for the command's flags.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  const std::string command = argv[1];
  std::vector<std::string> rest(argv + 2, argv + argc);
  if (command == "generate") return tessera::cli::RunGenerate(rest);
  if (command == "serve") return tessera::cli::RunServe(rest);
  if (command == "quantize") return tessera::cli::RunQuantize(rest);
  if (command == "perplexity") return tessera::cli::RunPerplexity(rest);
  if (command == "--help" || command == "-h" || command == "help") {
    PrintUsage(stdout);
    return 0;
  }
  std::fprintf(stderr, "tessera: unknown command '%s'\n", command.c_str());
  PrintUsage(stderr);
  return 2;
}
