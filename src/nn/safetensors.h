// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {str: str}}, then the raw little-endian tensor bytes (offsets are relative to
// the end of the header).
//
// The reader memory-maps the file and validates everything before copying a byte out: header
// length against the file size and a 100 MB cap, strict JSON, known keys and dtypes, shapes whose
// byte size matches data_offsets, offsets inside the data section and not overlapping. Any defect
// raises ValueError naming the file and the problem.
//
// dtype mapping on load: F32, F64, BF16, I64, I32 and BOOL keep their type; F16 becomes float32
// (needle has no float16); U8 widens to int32 (needle has no uint8, and int32 holds every value
// exactly). Other safetensors dtypes (I8, I16, U16, F8_*, ...) are rejected by name.
// Writing supports every needle dtype and is atomic (temporary file, fsync, rename).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ndarray/ndarray.h"

namespace needle::nn {

// Named arrays in a stable order (module registration order, or file order on load).
using NamedArrays = std::vector<std::pair<std::string, NDArray>>;
using Metadata = std::map<std::string, std::string>;

struct SafetensorsContents {
  NamedArrays tensors;
  Metadata metadata;
};

// Largest header the reader accepts, as the reference implementation does.
constexpr uint64_t kMaxSafetensorsHeader = 100ull * 1000 * 1000;

// Parses an in-memory safetensors image; `source` names it in error messages.
SafetensorsContents parse_safetensors(const uint8_t* data, size_t size, const std::string& source);
// Memory-maps and parses `path`; arrays are copied onto `device` (the mapping is released).
SafetensorsContents load_safetensors(const std::string& path, Device device = cpu());

// The file image of `tensors` (compacted, copied to host), keys in the given order.
std::string serialize_safetensors(const NamedArrays& tensors, const Metadata& metadata = {});
// Writes the image to `path` atomically.
void save_safetensors(const NamedArrays& tensors, const std::string& path,
                      const Metadata& metadata = {});

// Writes bytes to path.tmp.<pid>, fsyncs it, renames it over `path` and fsyncs the directory, so
// a crash leaves either the old file or the new one, never a torn mix.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace needle::nn
