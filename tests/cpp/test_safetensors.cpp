// safetensors: round trips of every dtype, the F16/U8/BOOL conversions, atomic saves, and a
// fuzz-style sweep of mutated images (truncations, bit flips, bogus headers and offsets) that the
// reader must reject with a ValueError naming the file, never crash or read out of bounds (run
// under -DNEEDLE_SANITIZE=address,undefined to prove the latter).
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <random>
#include <unistd.h>

#include "ndarray/error.h"
#include "ndarray/random.h"
#include "nn/safetensors.h"

using namespace needle;
using namespace needle::nn;

namespace {

std::string temp_path(const std::string& stem) {
  return "/tmp/needle_test_" + stem + "_" + std::to_string(::getpid()) + ".safetensors";
}

std::string image_from(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

SafetensorsContents parse(const std::string& image) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "mem");
}

NamedArrays sample_arrays() {
  manual_seed(7);
  return {{"a.weight", NDArray::randn({3, 4}, DType::Float32)},
          {"b", NDArray::randn({2, 2, 2}, DType::Float64)},
          {"c", NDArray::randn({5}, DType::BFloat16)},
          {"ids", NDArray::arange(0, 6, 1, DType::Int64).reshape({2, 3})},
          {"i32", NDArray::arange(-3, 3, 1, DType::Int32)},
          {"mask", gt(NDArray::randn({7}), Scalar(0.0))},
          {"scalar", NDArray::scalar(2.5, DType::Float32)},
          {"empty", NDArray::zeros({0, 3}, DType::Float32)}};
}

void require_equal(const NDArray& a, const NDArray& b) {
  REQUIRE(a.dtype() == b.dtype());
  REQUIRE(a.shape() == b.shape());
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x == y);
}

}  // namespace

TEST_CASE("safetensors round trip keeps names, order, dtypes, values and metadata") {
  NamedArrays arrays = sample_arrays();
  const std::string path = temp_path("roundtrip");
  save_safetensors(arrays, path, {{"format", "pt"}, {"note", "quote\" and \\ slash"}});
  SafetensorsContents back = load_safetensors(path);
  REQUIRE(back.tensors.size() == arrays.size());
  for (size_t i = 0; i < arrays.size(); ++i) {
    REQUIRE(back.tensors[i].first == arrays[i].first);
    require_equal(back.tensors[i].second, arrays[i].second);
  }
  REQUIRE(back.metadata.at("note") == "quote\" and \\ slash");
  std::remove(path.c_str());
}

TEST_CASE("safetensors writes a non-compact view by value") {
  NDArray base = NDArray::arange(0, 12, 1, DType::Float32).reshape({3, 4});
  NDArray t = base.transpose(0, 1);
  SafetensorsContents back = parse(serialize_safetensors({{"t", t}}));
  require_equal(back.tensors[0].second, t.compact());
}

TEST_CASE("safetensors converts F16 to float32, U8 to int32, BOOL bytes to 0/1") {
  // F16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff, smallest subnormal 0x0001 = 2^-24.
  std::string f16("\x00\x3c\x00\xc0\xff\x7b\x01\x00", 8);
  std::string u8("\x00\x7f\xff", 3);
  std::string b("\x00\x01\x05", 3);
  std::string header =
      R"({"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},)"
      R"("u":{"dtype":"U8","shape":[3],"data_offsets":[8,11]},)"
      R"("b":{"dtype":"BOOL","shape":[3],"data_offsets":[11,14]}})";
  SafetensorsContents c = parse(image_from(header, f16 + u8 + b));
  REQUIRE(c.tensors[0].second.dtype() == DType::Float32);
  REQUIRE(c.tensors[0].second.to_vector<double>() ==
          std::vector<double>{1.0, -2.0, 65504.0, std::ldexp(1.0, -24)});
  REQUIRE(c.tensors[1].second.dtype() == DType::Int32);
  REQUIRE(c.tensors[1].second.to_vector<int64_t>() == std::vector<int64_t>{0, 127, 255});
  REQUIRE(c.tensors[2].second.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 1});
}

TEST_CASE("safetensors rejects specific defects with a message naming the problem") {
  const std::string data(16, '\0');
  auto rejects = [&](const std::string& header, const std::string& needle_text) {
    INFO(header);
    REQUIRE_THROWS_WITH(parse(image_from(header, data)), Catch::Contains(needle_text));
  };
  rejects(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
          R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", "overlap");
  rejects(R"({"x":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", "past the data section");
  rejects(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "needs 12 bytes");
  rejects(R"({"x":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})", "unsupported dtype 'I8'");
  rejects(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "shape");
  rejects(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", "begin 8 > end 0");
  rejects(R"({"x":{"dtype":"F32","shape":[2]}})", "lacks");
  rejects(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", "unexpected key");
  rejects(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})",
          "more bytes than the file holds");
  rejects(R"({"__metadata__":{"a":1}})", "__metadata__ value");
  rejects(R"([1,2])", "not a JSON object");
  rejects(R"({"x":1,})", "not valid JSON");
  REQUIRE_THROWS_WITH(parse(std::string("\x05\x00\x00", 3)), Catch::Contains("shorter than"));
  std::string huge(8, '\xff');
  REQUIRE_THROWS_WITH(parse(huge), Catch::Contains("exceeds the limit"));
  std::string past = image_from("{}", "");
  past[0] = 50;
  REQUIRE_THROWS_WITH(parse(past), Catch::Contains("runs past the end"));
}

TEST_CASE("safetensors reader rejects hundreds of mutated files cleanly") {
  const std::string good = serialize_safetensors(sample_arrays(), {{"k", "v"}});
  REQUIRE_NOTHROW(parse(good));
  std::mt19937_64 rng(12345);
  const size_t header_end = 8 + (static_cast<uint8_t>(good[0]) | (static_cast<uint8_t>(good[1]) << 8));
  int rejected = 0, accepted = 0;
  auto attempt = [&](const std::string& image) {
    try {
      SafetensorsContents c = parse(image);
      ++accepted;  // a mutation inside tensor bytes (or a benign one) still parses
    } catch (const ValueError& e) {
      REQUIRE(std::string(e.what()).find("safetensors file 'mem'") == 0);
      ++rejected;
    }
  };
  // Every truncation length.
  for (size_t len = 0; len < good.size(); ++len) attempt(good.substr(0, len));
  // Bit flips and byte replacements in the length prefix and the header.
  for (int i = 0; i < 600; ++i) {
    std::string m = good;
    size_t pos = rng() % header_end;
    if (i % 2) m[pos] = static_cast<char>(m[pos] ^ (1u << (rng() % 8)));
    else m[pos] = "{}[]\",:0123456789-e \x00\xff"[rng() % 20];
    attempt(m);
  }
  // Digit edits: rewrite numbers in the header (offsets and shapes) to random values.
  for (int i = 0; i < 300; ++i) {
    std::string m = good;
    std::vector<size_t> digits;
    for (size_t p = 8; p < header_end; ++p)
      if (m[p] >= '0' && m[p] <= '9') digits.push_back(p);
    size_t pos = digits[rng() % digits.size()];
    m.replace(pos, 1, std::to_string(rng() % (i % 3 == 0 ? 100000000000ull : 1000)));
    // Keep the length prefix consistent so the edited JSON itself is what gets tested.
    uint64_t n = header_end - 8 + (m.size() - good.size());
    for (int b = 0; b < 8; ++b) m[b] = static_cast<char>((n >> (8 * b)) & 0xff);
    attempt(m);
  }
  // Random garbage of random lengths.
  for (int i = 0; i < 200; ++i) {
    std::string m(rng() % 64, '\0');
    for (char& c : m) c = static_cast<char>(rng());
    attempt(m);
  }
  INFO("rejected " << rejected << ", accepted " << accepted);
  REQUIRE(rejected > 1000);
}

TEST_CASE("safetensors load reports a truncated or missing file by name") {
  const std::string path = temp_path("truncated");
  std::string image = serialize_safetensors(sample_arrays());
  {
    std::ofstream f(path, std::ios::binary);
    f.write(image.data(), static_cast<std::streamsize>(image.size() - 5));
  }
  REQUIRE_THROWS_WITH(load_safetensors(path), Catch::Contains(path) && Catch::Contains("truncated"));
  std::remove(path.c_str());
  REQUIRE_THROWS_AS(load_safetensors(path), RuntimeError);
}

TEST_CASE("safetensors atomic save replaces the old file and leaves no temporary") {
  const std::string path = temp_path("atomic");
  save_safetensors({{"x", NDArray::ones({2})}}, path);
  save_safetensors({{"y", NDArray::zeros({3})}}, path);
  SafetensorsContents c = load_safetensors(path);
  REQUIRE(c.tensors.size() == 1);
  REQUIRE(c.tensors[0].first == "y");
  REQUIRE(::access((path + ".tmp." + std::to_string(::getpid())).c_str(), F_OK) != 0);
  // A save that fails part-way leaves the previous checkpoint intact.
  REQUIRE_THROWS_AS(save_safetensors({{"z", NDArray::ones({1})}, {"z", NDArray::ones({1})}}, path),
                    ValueError);
  REQUIRE(load_safetensors(path).tensors[0].first == "y");
  REQUIRE_THROWS_AS(save_safetensors({{"z", NDArray::ones({1})}}, "/nonexistent_dir/x.st"),
                    RuntimeError);
  std::remove(path.c_str());
}
