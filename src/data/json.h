// A small strict JSON (RFC 8259) reader shared by the tokenizer loaders and the
// safetensors header reader. Objects keep their key order because some formats
// (tokenizer merges, tensor listings) are easier to reason about in file order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace needle::json {

class Value;
using Array = std::vector<Value>;
using Member = std::pair<std::string, Value>;
using Object = std::vector<Member>;

enum class Type { Null, Bool, Int, Double, String, Array, Object };

const char* type_name(Type t);

class Value {
 public:
  Value() = default;
  explicit Value(bool b) : data_(b) {}
  explicit Value(int64_t i) : data_(i) {}
  explicit Value(double d) : data_(d) {}
  explicit Value(std::string s) : data_(std::move(s)) {}
  explicit Value(Array a) : data_(std::move(a)) {}
  explicit Value(Object o) : data_(std::move(o)) {}

  Type type() const { return static_cast<Type>(data_.index()); }
  bool is_null() const { return type() == Type::Null; }
  bool is_bool() const { return type() == Type::Bool; }
  bool is_int() const { return type() == Type::Int; }
  bool is_number() const { return type() == Type::Int || type() == Type::Double; }
  bool is_string() const { return type() == Type::String; }
  bool is_array() const { return type() == Type::Array; }
  bool is_object() const { return type() == Type::Object; }

  // Accessors throw std::invalid_argument naming the expected and actual type.
  bool as_bool() const;
  int64_t as_int() const;
  double as_double() const;  // ints convert
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;

  // Member lookup on an object (linear: objects are small or iterated whole).
  // find returns nullptr when the key is absent; at throws.
  const Value* find(std::string_view key) const;
  const Value& at(std::string_view key) const;

 private:
  std::variant<std::monostate, bool, int64_t, double, std::string, Array, Object> data_;
};

// Parses one JSON document (surrounding whitespace allowed, nothing else).
// Throws std::invalid_argument "JSON error at byte N: ..." on malformed input,
// duplicate object keys, invalid UTF-8, lone surrogates or nesting deeper than 512.
Value parse(std::string_view text);

}  // namespace needle::json
