// drift_ks_compare: runs tessera's KS test (and smoothed KL) over cases read from a JSON
// file and prints the results as JSON, so a script can compare them with scipy.
//   input:  {"cases": [{"x": [...], "y": [...]}                        two-sample KS
//                     | {"live": [...], "reference": [...], "alpha": a}   smoothed KL
//                     | {"kstwo": n, "at": x} | {"smirnov": n, "at": x}]} distributions
//   output: {"results": [{"d": D, "p": p, "exact": bool} | {"kl": v} | {"sf": p}]}
#include <cstdio>
#include <fstream>
#include <iostream>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/drift/kolmogorov.h"
#include "runtime/drift/stats.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "drift_ks_compare: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: drift_ks_compare CASES.json\n");
    return 2;
  }
  std::ifstream in(argv[1]);
  if (!in) return Fail(std::string("cannot open ") + argv[1]);
  nlohmann::json input = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (input.is_discarded() || !input.contains("cases") || !input["cases"].is_array()) {
    return Fail("input is not {\"cases\": [...]}");
  }
  nlohmann::json results = nlohmann::json::array();
  for (const nlohmann::json& c : input["cases"]) {
    if (c.contains("x")) {
      const std::vector<double> x = c["x"].get<std::vector<double>>();
      const std::vector<double> y = c["y"].get<std::vector<double>>();
      auto r = tessera::drift::KsTwoSample(x, y);
      if (!r.ok()) return Fail(std::string(r.status().message()));
      results.push_back({{"d", r->statistic}, {"p", r->pvalue}, {"exact", r->exact}});
    } else if (c.contains("kstwo")) {
      results.push_back(
          {{"sf", tessera::drift::KolmogorovSf(c["kstwo"].get<int64_t>(), c["at"].get<double>())}});
    } else if (c.contains("smirnov")) {
      results.push_back(
          {{"sf", tessera::drift::SmirnovSf(c["smirnov"].get<int64_t>(), c["at"].get<double>())}});
    } else {
      const std::vector<int64_t> live = c["live"].get<std::vector<int64_t>>();
      const std::vector<int64_t> ref = c["reference"].get<std::vector<int64_t>>();
      auto kl = tessera::drift::KlDivergence(live, ref, c["alpha"].get<double>());
      if (!kl.ok()) return Fail(std::string(kl.status().message()));
      results.push_back({{"kl", *kl}});
    }
  }
  std::cout << nlohmann::json{{"results", results}}.dump() << "\n";
  return 0;
}
