#!/bin/sh
# One index of a batch analysis: video number JOB_COMPLETION_INDEX of videos.txt (blank and # lines not
# counted), through `sipec analyze` against the in-cluster services. One video per index, so that the Job's
# retries (backoffLimitPerIndex) and its podFailurePolicy act per video.
# Results mirror the input layout, named by the whole file name so that a.mp4 and a.avi never share a folder:
# /videos/<dir>/<name>.mp4 -> /results/<RUN_NAME>/<dir>/<name>.mp4/.
# --resume: a retried index continues its video after the last saved chunk, refuses a checkpoint of another
# video or other model versions, and leaves a finished video as it is (nothing analysed or rendered again).
# Exit status: sipec analyze's (0 done; 1 failed, worth a retry; 2 usage; 3 the video does not open or decode);
# 2 here when VIDEOS (spec.completions) does not match videos.txt.
set -u
index="${JOB_COMPLETION_INDEX:?JOB_COMPLETION_INDEX is not set: run as an Indexed Job}"
expected="${VIDEOS:?VIDEOS is not set: it must equal the Job's spec.completions and the videos in videos.txt}"
run="${RUN_NAME:?RUN_NAME is not set}"
list="${VIDEOS_FILE:-/etc/sipec/videos.txt}"
videos_root="${VIDEOS_ROOT:-/videos}"
results_root="${RESULTS_ROOT:-/results}"
config_dir="${SIPEC_CONFIG_DIR:-/etc/sipec}"
i=0
mine=""
while IFS= read -r video || [ -n "$video" ]; do
  case "$video" in
    '' | '#'*) continue ;;
  esac
  if [ "$i" -eq "$index" ]; then
    mine="$video"
  fi
  i=$((i + 1))
done < "$list"
if [ "$i" -ne "$expected" ]; then
  echo "index $index: $list lists $i video(s) but VIDEOS=$expected: set completions and VIDEOS to $i" >&2
  exit 2
fi
if [ -z "$mine" ]; then
  echo "index $index: no video at this index ($i in $list)" >&2
  exit 2
fi
case "$mine" in
  */*) out="$results_root/$run/${mine%/*}" ;;
  *) out="$results_root/$run" ;;
esac
echo "index $index/$i: $mine -> $out/${mine##*/}"
exec sipec --log-format=json analyze "$videos_root/$mine" --services "$config_dir/endpoints.yaml" \
  --config "$config_dir/pipeline.yaml" --out "$out" --folder-names file --resume --quiet
