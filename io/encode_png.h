// PNG encoding of a decoded image (io/image.h), for pictures the tools write (a preview grid of
// augmented samples). Lossless, so decode_png (io/decode.h) gives back the same pixels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/image.h"

namespace mokd::data {

// The PNG file of `img` (1 channel: 8-bit grey, 3: 8-bit RGB), as bytes. Throws mokd::Error naming
// `what` for another channel count, an empty image or a libpng failure.
std::vector<uint8_t> encode_png(const Image& img, const std::string& what);

}  // namespace mokd::data
