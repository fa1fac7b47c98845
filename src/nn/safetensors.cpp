// safetensors reader and writer (format and dtype mapping in safetensors.h).
#include "nn/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "data/json.h"
#include "ndarray/error.h"

namespace needle::nn {
namespace {

[[noreturn]] void fail(const std::string& source, const std::string& problem) {
  throw ValueError("safetensors file '" + source + "': " + problem);
}

struct FileDType {
  const char* name;
  size_t bytes;  // size in the file
};
// The file dtypes the reader understands; anything else is rejected by name.
const FileDType kFileDTypes[] = {{"F32", 4}, {"F64", 8}, {"F16", 2}, {"BF16", 2},
                                 {"I64", 8}, {"I32", 4}, {"U8", 1},  {"BOOL", 1}};

const FileDType* find_file_dtype(const std::string& name) {
  for (const FileDType& d : kFileDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

const char* file_dtype_name(DType dt) {
  switch (dt) {
    case DType::Float32: return "F32";
    case DType::Float64: return "F64";
    case DType::BFloat16: return "BF16";
    case DType::Int64: return "I64";
    case DType::Int32: return "I32";
    case DType::Bool: return "BOOL";
  }
  throw TypeError("safetensors: no file dtype for needle dtype " + std::string(dtype_name(dt)));
}

// IEEE half -> float, exact for every value (normals, subnormals, inf, NaN).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ffu;
  float mag;
  if (exp == 0) {
    mag = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    mag = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    mag = std::ldexp(static_cast<float>(mant | 0x400u), exp - 25);
  }
  uint32_t bits;
  std::memcpy(&bits, &mag, 4);
  bits |= sign;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

struct Entry {
  std::string name;
  const FileDType* dtype;
  Shape shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& source, const std::string& name, const json::Value& v,
                  uint64_t data_size) {
  if (!v.is_object()) fail(source, "entry '" + name + "' is not a JSON object");
  Entry e{name, nullptr, {}, 0, 0};
  bool have_dtype = false, have_shape = false, have_offsets = false;
  for (const auto& [key, field] : v.as_object()) {
    if (key == "dtype") {
      if (!field.is_string()) fail(source, "entry '" + name + "': dtype is not a string");
      e.dtype = find_file_dtype(field.as_string());
      if (!e.dtype)
        fail(source, "entry '" + name + "': unsupported dtype '" + field.as_string() +
                         "' (expected F32, F64, F16, BF16, I64, I32, U8 or BOOL)");
      have_dtype = true;
    } else if (key == "shape") {
      if (!field.is_array()) fail(source, "entry '" + name + "': shape is not an array");
      for (const json::Value& d : field.as_array()) {
        if (!d.is_int() || d.as_int() < 0)
          fail(source, "entry '" + name + "': shape holds something other than a size >= 0");
        e.shape.push_back(d.as_int());
      }
      if (e.shape.size() > static_cast<size_t>(kMaxDims))
        fail(source, "entry '" + name + "': " + std::to_string(e.shape.size()) +
                         " dims, at most " + std::to_string(kMaxDims) + " supported");
      have_shape = true;
    } else if (key == "data_offsets") {
      if (!field.is_array() || field.as_array().size() != 2 || !field.as_array()[0].is_int() ||
          !field.as_array()[1].is_int() || field.as_array()[0].as_int() < 0 ||
          field.as_array()[1].as_int() < 0)
        fail(source, "entry '" + name + "': data_offsets is not [begin, end] of sizes >= 0");
      e.begin = static_cast<uint64_t>(field.as_array()[0].as_int());
      e.end = static_cast<uint64_t>(field.as_array()[1].as_int());
      have_offsets = true;
    } else {
      fail(source, "entry '" + name + "': unexpected key '" + key + "'");
    }
  }
  if (!have_dtype || !have_shape || !have_offsets)
    fail(source, "entry '" + name + "' lacks one of dtype, shape, data_offsets");
  if (e.begin > e.end)
    fail(source, "entry '" + name + "': data_offsets begin " + std::to_string(e.begin) +
                     " > end " + std::to_string(e.end));
  if (e.end > data_size)
    fail(source, "entry '" + name + "': data_offsets end " + std::to_string(e.end) +
                     " lies past the data section of " + std::to_string(data_size) +
                     " bytes (truncated file?)");
  // The byte size the shape implies, with every product checked against the data size so a
  // huge shape cannot overflow.
  uint64_t bytes = e.dtype->bytes;
  bool zero = false;
  for (int64_t d : e.shape) zero = zero || d == 0;
  if (zero) {
    bytes = 0;
  } else {
    for (int64_t d : e.shape) {
      if (static_cast<uint64_t>(d) > data_size || bytes > data_size / static_cast<uint64_t>(d))
        fail(source, "entry '" + name + "': shape " + shape_str(e.shape) +
                         " needs more bytes than the file holds");
      bytes *= static_cast<uint64_t>(d);
    }
  }
  if (bytes != e.end - e.begin)
    fail(source, "entry '" + name + "': shape " + shape_str(e.shape) + " of " + e.dtype->name +
                     " needs " + std::to_string(bytes) + " bytes, data_offsets span " +
                     std::to_string(e.end - e.begin));
  return e;
}

NDArray decode(const Entry& e, const uint8_t* p, Device device) {
  const std::string dt = e.dtype->name;
  const size_t n = static_cast<size_t>(shape_numel(e.shape));
  // Element-wise memcpy avoids unaligned loads: offsets need not be aligned.
  if (dt == "F16") {
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = half_to_float(h);
    }
    return NDArray::from_host(out.data(), e.shape, DType::Float32, device);
  }
  if (dt == "U8") {
    std::vector<int32_t> out(p, p + n);
    return NDArray::from_host(out.data(), e.shape, DType::Int32, device);
  }
  if (dt == "BOOL") {
    // Any non-zero byte is true; copying raw bytes into bool storage would be undefined.
    std::vector<uint8_t> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = p[i] != 0;
    return NDArray::from_host(out.data(), e.shape, DType::Bool, device);
  }
  const DType target = dt == "F32"    ? DType::Float32
                       : dt == "F64"  ? DType::Float64
                       : dt == "BF16" ? DType::BFloat16
                       : dt == "I64"  ? DType::Int64
                                      : DType::Int32;
  std::vector<uint8_t> staging(p, p + n * e.dtype->bytes);  // aligned copy of the bytes
  return NDArray::from_host(staging.data(), e.shape, target, device);
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

SafetensorsContents parse_safetensors(const uint8_t* data, size_t size,
                                      const std::string& source) {
  if (size < 8)
    fail(source, "file of " + std::to_string(size) + " bytes is shorter than the 8-byte header "
                 "length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > kMaxSafetensorsHeader)
    fail(source, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                     std::to_string(kMaxSafetensorsHeader) + " bytes");
  if (header_len > size - 8)
    fail(source, "header length " + std::to_string(header_len) + " runs past the end of the " +
                     std::to_string(size) + "-byte file (truncated file?)");
  const uint64_t data_size = size - 8 - header_len;
  const uint8_t* data_start = data + 8 + header_len;

  json::Value header;
  try {
    header = json::parse(std::string_view(reinterpret_cast<const char*>(data + 8), header_len));
  } catch (const std::invalid_argument& e) {
    fail(source, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(source, "header is not a JSON object");

  SafetensorsContents out;
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.as_object()) {
    if (name == "__metadata__") {
      if (!v.is_object()) fail(source, "__metadata__ is not a JSON object");
      for (const auto& [k, mv] : v.as_object()) {
        if (!mv.is_string()) fail(source, "__metadata__ value of '" + k + "' is not a string");
        out.metadata[k] = mv.as_string();
      }
      continue;
    }
    entries.push_back(parse_entry(source, name, v, data_size));
  }
  // Non-overlap: sorted by begin, each non-empty range starts at or after the previous end.
  std::vector<const Entry*> sorted;
  for (const Entry& e : entries)
    if (e.end > e.begin) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i]->begin < sorted[i - 1]->end)
      fail(source, "entries '" + sorted[i - 1]->name + "' and '" + sorted[i]->name +
                       "' overlap in the data section");

  for (const Entry& e : entries)
    out.tensors.emplace_back(e.name, decode(e, data_start + e.begin, cpu()));
  return out;
}

SafetensorsContents load_safetensors(const std::string& path, Device device) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw RuntimeError("cannot open safetensors file '" + path + "': " + errno_text());
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw RuntimeError("safetensors file '" + path + "' is not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  SafetensorsContents contents;
  if (size == 0) {
    ::close(fd);
    fail(path, "file is empty");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw RuntimeError("cannot map safetensors file '" + path + "': " +
                                            errno_text());
  try {
    contents = parse_safetensors(static_cast<const uint8_t*>(map), size, path);
  } catch (...) {
    ::munmap(map, size);
    throw;
  }
  ::munmap(map, size);
  if (!device.is_cpu())
    for (auto& [name, a] : contents.tensors) a = a.to(device);
  return contents;
}

std::string serialize_safetensors(const NamedArrays& tensors, const Metadata& metadata) {
  std::set<std::string> seen;
  std::string header = "{";
  std::vector<std::string> blobs;
  uint64_t offset = 0;
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool mfirst = true;
    for (const auto& [k, v] : metadata) {
      header += (mfirst ? "\"" : ",\"") + json_escape(k) + "\":\"" + json_escape(v) + "\"";
      mfirst = false;
    }
    header += "}";
    first = false;
  }
  for (const auto& [name, array] : tensors) {
    NEEDLE_CHECK(name != "__metadata__", ValueError,
                 "safetensors: '__metadata__' is reserved and cannot name a tensor");
    NEEDLE_CHECK(seen.insert(name).second, ValueError, "safetensors: duplicate tensor name '",
                 name, "'");
    NEEDLE_CHECK(array.defined(), ValueError, "safetensors: tensor '", name, "' is undefined");
    std::string blob(array.nbytes(), '\0');
    if (!blob.empty()) array.compact().copy_to_host(blob.data());
    header += std::string(first ? "" : ",") + "\"" + json_escape(name) + "\":{\"dtype\":\"" +
              file_dtype_name(array.dtype()) + "\",\"shape\":[";
    for (int i = 0; i < array.ndim(); ++i)
      header += (i ? "," : "") + std::to_string(array.shape()[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + blob.size()) + "]}";
    offset += blob.size();
    blobs.push_back(std::move(blob));
    first = false;
  }
  header += "}";
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  for (const std::string& b : blobs) out += b;
  return out;
}

void save_safetensors(const NamedArrays& tensors, const std::string& path,
                      const Metadata& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw RuntimeError("cannot create '" + tmp + "': " + errno_text());
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      std::string why = errno_text();
      ::close(fd);
      ::unlink(tmp.c_str());
      throw RuntimeError("cannot write '" + tmp + "': " + why);
    }
    written += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw RuntimeError("cannot flush '" + tmp + "': " + why);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw RuntimeError("cannot rename '" + tmp + "' to '" + path + "': " + why);
  }
  // The rename itself is durable only once the directory entry is flushed.
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace needle::nn
