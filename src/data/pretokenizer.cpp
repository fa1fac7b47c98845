// PCRE2 (UTF + UCP, JIT-compiled) runs GPT-2's pattern. Every position of valid
// text matches some alternative (the last two cover whitespace, the others
// everything else), so the pieces tile the text.
#include "data/pretokenizer.h"

#include <pcre2.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace needle::data {
namespace {

const char kPattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct CompiledPattern {
  pcre2_code* code = nullptr;
  bool jit = false;

  CompiledPattern() {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw std::runtime_error(std::string("pre-tokenizer regex failed to compile: ") +
                               reinterpret_cast<char*>(msg));
    }
    // Without JIT support (some platforms) the interpreter gives the same matches.
    jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  }
  ~CompiledPattern() { pcre2_code_free(code); }
};

const CompiledPattern& pattern() {
  static const CompiledPattern p;
  return p;
}

// Per-thread match state. The JIT stack grows to 1 MiB so that the backtracking
// of \s+(?!\S) over very long whitespace runs cannot exhaust it.
struct ThreadMatcher {
  pcre2_match_data* data;
  pcre2_match_context* context;
  pcre2_jit_stack* stack;

  ThreadMatcher() {
    data = pcre2_match_data_create_from_pattern(pattern().code, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
    if (!data || !context || !stack) throw std::bad_alloc();
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadMatcher() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

}  // namespace

size_t Pretokenizer::next_end(std::string_view text, size_t pos) {
  thread_local ThreadMatcher m;
  const auto& p = pattern();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  // ANCHORED: the piece must start here; NO_UTF_CHECK: the caller validated the
  // text once, and PCRE2 would otherwise re-check the whole subject per call.
  const int rc = p.jit ? pcre2_jit_match(p.code, subject, text.size(), pos,
                                         PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, m.data, m.context)
                       : pcre2_match(p.code, subject, text.size(), pos,
                                     PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, m.data, m.context);
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    throw std::runtime_error("pre-tokenizer match failed at byte " + std::to_string(pos) + ": " +
                             reinterpret_cast<char*>(msg));
  }
  const size_t end = pcre2_get_ovector_pointer(m.data)[1];
  if (end <= pos)
    throw std::runtime_error("pre-tokenizer made no progress at byte " + std::to_string(pos));
  return end;
}

std::vector<std::string_view> Pretokenizer::split(std::string_view text) {
  std::vector<std::string_view> out;
  split(text, [&](std::string_view w) { out.push_back(w); });
  return out;
}

}  // namespace needle::data
