#!/bin/sh
# One shard of a batch analysis: the videos of videos.txt whose position i (blank and # lines not counted)
# satisfies i mod SHARDS == JOB_COMPLETION_INDEX, each through `sipec analyze` against the in-cluster services.
# Results mirror the input layout: /videos/<dir>/<name>.mp4 -> /results/<RUN_NAME>/<dir>/<name>/.
# --resume: a retried shard (or a re-run of the Job) continues each video after its last saved chunk.
# Exits non-zero when any of its videos failed, so that the Job retries this index (backoffLimitPerIndex).
set -u
index="${JOB_COMPLETION_INDEX:?JOB_COMPLETION_INDEX is not set: run as an Indexed Job}"
shards="${SHARDS:?SHARDS is not set: it must equal the Job's spec.completions}"
run="${RUN_NAME:?RUN_NAME is not set}"
list="${VIDEOS_FILE:-/etc/sipec/videos.txt}"
videos_root="${VIDEOS_ROOT:-/videos}"
results_root="${RESULTS_ROOT:-/results}"
config_dir="${SIPEC_CONFIG_DIR:-/etc/sipec}"
if [ "$index" -ge "$shards" ]; then
  echo "shard $index: index not below SHARDS=$shards (set SHARDS to spec.completions)" >&2
  exit 2
fi
i=0
mine=0
failed=0
while IFS= read -r video || [ -n "$video" ]; do
  case "$video" in
    '' | '#'*) continue ;;
  esac
  if [ $((i % shards)) -eq "$index" ]; then
    mine=$((mine + 1))
    case "$video" in
      */*) out="$results_root/$run/${video%/*}" ;;
      *) out="$results_root/$run" ;;
    esac
    echo "shard $index/$shards: $video -> $out"
    if ! sipec --log-format=json analyze "$videos_root/$video" --services "$config_dir/endpoints.yaml" \
        --config "$config_dir/pipeline.yaml" --out "$out" --resume --quiet; then
      failed=$((failed + 1))
      echo "shard $index/$shards: FAILED $video" >&2
    fi
  fi
  i=$((i + 1))
done < "$list"
echo "shard $index/$shards: $mine video(s), $failed failed"
[ "$failed" -eq 0 ]
