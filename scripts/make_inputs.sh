#!/usr/bin/env bash
# Makes the committed speech clips in fixtures/inputs/ with espeak-ng and sox (Debian packages).
# Run once by hand; the outputs are committed so that every machine uses the same bytes.
set -euo pipefail
cd "$(dirname "$0")/../fixtures/inputs"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# 1. 22.05 kHz mono (espeak-ng's native rate), ~4 s
espeak-ng -v en-us -s 155 -w espeak_22k_mono.wav \
  "The quick brown fox jumps over the lazy dog, while the sun sets slowly behind the hills."

# 2. 44.1 kHz stereo: two different voices, one per channel (exercises downmix + resampling)
espeak-ng -v en-us+m3 -s 150 -w "$tmp/l.wav" "Please call Stella and ask her to bring these things with her from the store."
espeak-ng -v en-gb+f2 -s 150 -w "$tmp/r.wav" "Please call Stella and ask her to bring these things with her from the store."
sox -M "$tmp/l.wav" "$tmp/r.wav" -r 44100 -b 16 stereo_44k.wav remix 1 2 gain -n -3
# keep both channels the same length (sox -M pads the shorter)

# 3. > 10 s, 16 kHz mono (exercises the 6 s / 10 s conditioning cuts and upsampling to 24 kHz)
espeak-ng -v en-us+m1 -s 140 -w "$tmp/long.wav" \
  "Six seconds of this clip condition the text to speech model, and ten seconds condition the decoder. \
   Everything after that is cut away, so this sentence keeps talking for a while longer than needed."
sox "$tmp/long.wav" -r 16000 -b 16 long_16k.wav

# 4. > 30 s, 16 kHz mono (exercises the S3 tokenizer's long-audio path: 30 s windows, 4 s overlap)
espeak-ng -v en-us -s 150 -w "$tmp/vlong.wav" \
  "This is a very long reference clip. It is here to push the speech tokenizer past thirty seconds, \
   where it stops encoding the whole utterance at once and instead cuts it into windows of thirty \
   seconds that overlap by four seconds, tokenizes each window, and merges the token sequences \
   again. A port that gets the window hop, the overlap or the merge wrong will show different \
   tokens near the seams. The text goes on with a few more sentences about nothing in particular, \
   like the weather, which was mild today, and the trains, which were late again, as they usually \
   are on a Wednesday afternoon in late November, when the leaves are gone and the light fades \
   early. One more sentence should be enough to pass the mark comfortably."
sox "$tmp/vlong.wav" -r 16000 -b 16 very_long_16k.wav

for f in *.wav; do printf '%s: ' "$f"; soxi -D "$f" | tr '\n' ' '; soxi -r "$f" | tr '\n' ' '; soxi -c "$f"; done
