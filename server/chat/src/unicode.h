// UTF-8 and the slice of Python's Unicode behaviour that chat templates reach: str.isspace(),
// line boundaries for splitlines(), simple case mapping for upper()/lower()/title(), and
// isprintable() for repr(). Strings stay UTF-8 bytes; every walk steps over whole code points and
// treats an ill-formed byte as one code point of its own, so no input can make a walk overrun.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace macserve::chat {

// Byte length of the code point that starts at s[i] (1 for an ill-formed byte).
size_t utf8_char_len(std::string_view s, size_t i);
// Decodes the code point at s[i] and advances i; an ill-formed byte decodes as U+FFFD.
char32_t utf8_next(std::string_view s, size_t& i);
// Decodes the code point that ends at s[end) (its start is returned in start).
char32_t utf8_prev(std::string_view s, size_t end, size_t& start);
void utf8_append(std::string& out, char32_t cp);
size_t utf8_length(std::string_view s);  // in code points, as Python's len()
bool is_valid_utf8(std::string_view s);

bool is_py_space(char32_t cp);       // str.isspace() and the `\s` of Python's re
bool is_line_boundary(char32_t cp);  // what str.splitlines() splits on (\r\n counts once)
bool is_printable(char32_t cp);      // str.isprintable(), for repr()
bool is_word_char(char32_t cp);      // `\w` of Python's re (letters, digits, underscore)
bool is_digit(char32_t cp);          // ASCII digits only: enough for templates

// Simple case mapping over the scripts chat content uses most (Latin, Greek, Cyrillic, Armenian,
// fullwidth Latin). Code points outside those keep their case, as uncased scripts (CJK) do.
char32_t to_lower_cp(char32_t cp);
char32_t to_upper_cp(char32_t cp);
bool is_upper_cp(char32_t cp);
bool is_lower_cp(char32_t cp);
bool is_cased_cp(char32_t cp);

std::string py_lower(std::string_view s);       // str.lower(), with the Greek final-sigma rule
std::string py_upper(std::string_view s);       // str.upper() ('ß' -> 'SS')
std::string py_title(std::string_view s);       // str.title()
std::string py_capitalize(std::string_view s);  // str.capitalize()

}  // namespace macserve::chat
