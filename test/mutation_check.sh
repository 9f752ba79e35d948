#!/usr/bin/env bash
# Hand-run mutation check (not part of `make test`): break each documented promise with a
# one-line change and confirm that its test fails. See test/README.md. Needs a clean work tree
# (every mutation is undone with `git checkout`). Usage: test/mutation_check.sh [NAME_FILTER]
set -u
cd "$(dirname "$0")/.."
if ! git diff --quiet; then echo 'work tree not clean: commit or stash first' >&2; exit 2; fi
PY=${PY:-.venv/bin/python}
export PYTHONPATH=$PWD
filter=${1:-}
T=test/ros/test_node_promises.py
# name | file | sed expression | test (pytest node id or -k expression)
mutations=(
"layout|sap_ros/io/image_codec.py|s/('score', '<f4'), ('area_px', '<u4')/('area_px', '<u4'), ('score', '<f4')/|test/io/test_objects_wire_layout.py"
"prompt-frame|sap_ros/ros/node.py|s/if frame_id and self._camera_frame_id and/if False and/|$T::test_prompts_in_another_frame_than_the_cameras_are_rejected"
"embeddings|sap_ros/ros/node.py|s/embeddings = self._config.output.embeddings if self._config else True/embeddings = True/|$T::test_output_embeddings_parameter_sets_the_published_point_size"
"pipeline-ms|sap_ros/ros/diagnostics.py|s/f'{stats.last_pipeline_ms:.1f}'/f'{stats.last_latency_ms:.1f}'/|$T::test_diagnostics_report_latency_pipeline_time_and_fps"
"fps|sap_ros/ros/diagnostics.py|s/return (len(times) - 1) \//return len(times) \//|$T::test_diagnostics_report_latency_pipeline_time_and_fps"
"latency|sap_ros/ros/node.py|s/latency_ms=(self._time_s() - frame.received_s) \* 1e3/latency_ms=0.0/|$T::test_diagnostics_report_latency_pipeline_time_and_fps"
"reject-kind|sap_ros/ros/diagnostics.py|s/self.rejected\[kind\] += 1/self.rejected[RejectKind.IMAGE] += 1/|$T::test_each_rejection_counts_under_its_own_kind"
"period|sap_ros/ros/node.py|s/^DIAGNOSTICS_PERIOD_S = 1.0/DIAGNOSTICS_PERIOD_S = 0.5/|$T::test_diagnostics_come_once_a_second_of_ros_time"
"throttle|sap_ros/ros/node.py|s/^LOG_THROTTLE_S = 5.0/LOG_THROTTLE_S = 0.5/|$T::test_rejections_are_logged_once_per_kind_every_5_s_with_the_count_held_back"
"throttle-suffix|sap_ros/ros/node.py|s/more = f' ({held} more/more = f' ({held} other/|$T::test_rejections_are_logged_once_per_kind_every_5_s_with_the_count_held_back"
"reset|sap_ros/ros/node.py|s/^        pipeline.reset()/        pass/|$T::test_reset_through_the_node_forgets_objects_and_memory"
"reset-blocks|sap_ros/ros/node.py|s/worker.between_frames(functools.partial(self._reset_pipeline, pipeline))/worker.between_frames(functools.partial(self._reset_pipeline, pipeline)); [time.sleep(0.01) for _ in iter(lambda: worker.busy, False)]/|$T::test_reset_and_diagnostics_answer_while_a_frame_is_in_flight"
"deactivate-blocks|sap_ros/ros/node.py|s/worker.stop(last=close, timeout_s=FREE_WAIT_S)/worker.stop(last=close)/|$T::test_deactivate_returns_during_a_frame_and_frees_the_model_after_it"
"cleanup|sap_ros/ros/node.py|s/self.destroy_lifecycle_publisher(pub)/pass/|$T::test_cleanup_destroys_the_publishers_and_the_reset_service"
"prompt-cap|sap_ros/ros/node.py|s/\[-MAX_PENDING_PROMPTS:\]/[:MAX_PENDING_PROMPTS]/|$T::test_pending_prompts_are_capped_to_the_newest"
"oom-cache|sap_ros/ros/node.py|/self._reject(RejectKind.PIPELINE, f'{type(error).__name__}: {error}')/{n;s/_free_accelerator_cache()/pass/}|$T::test_cuda_out_of_memory_skips_the_frame_empties_the_cache_and_counts"
"autostart|sap_ros/ros/node.py|s/if not self.get_parameter('autostart').value:/if False:/|test/ros/test_node_process.py::test_autostart_false_waits_for_transitions"
"oracle-ignore|sap_ros/eval/replay_methods.py|s/ignore=gt_ignore)/ignore=None)/|test/eval/test_replay_ignore.py::test_ignored_pixels_are_neither_scored_nor_segmented_by_the_oracle"
"max-frames|sap_ros/eval/replay.py|s/n_frames = min(len(frames), options.max_frames or len(frames))/n_frames = len(frames)/|test/eval/test_replay_ignore.py::test_max_frames_replays_and_writes_only_the_first_frames"
"fragmentation|sap_ros/eval/metrics.py|s/^FRAGMENT_MIN_SHARE = 0.1/FRAGMENT_MIN_SHARE = 0.6/|test/eval/test_report.py::test_fragmentation_seam_and_pole_figures_carry_their_values"
"seam|sap_ros/eval/metrics.py|s/(majority_left == majority_right)/(majority_left >= 0)/|test/eval/test_report.py::test_fragmentation_seam_and_pole_figures_carry_their_values"
"geometry-speedup|sap_ros/bench/geometry.py|s/speedup_vs_py360convert=None if py360 is None else ratio(py360.e2p_ms)/speedup_vs_py360convert=None if py360 is None else ratio(py360.cached_ms)/|test/bench/test_bench_geometry.py::test_speedup_is_the_ratio_of_the_two_measured_times"
"frame-device-caps|sap_ros/engine/extents.py|s/device_masks = \[m for m in masks if isinstance(m, torch.Tensor)\]/device_masks = []/|test/engine/test_pipeline_frame_path.py::test_host_reads_per_frame_do_not_grow_with_objects"
"frame-nonempty|sap_ros/engine/sam2_adapter.py|s/(low_res\[:, 0\] > 0).flatten(1).any(dim=1, keepdim=True)/(low_res[:, 0] > 0).flatten(1).all(dim=1, keepdim=True)/|test/engine/test_sam2_adapter.py::test_one_sam2_call_reads_back_once_whatever_the_batch"
"frame-click-scale|sap_ros/engine/pipeline.py|s/scale = self.input_px \/ self.layout.size_px  # the segmenter's patch pixels/scale = 1.0/|test/engine/test_pipeline_frame_path.py::test_torch_path_samples_at_the_segmenters_size_and_scales_clicks_to_it"
"frame-device-outputs|sap_ros/engine/pipeline.py|s/device_outputs=on_device)/device_outputs=False)/|test/engine/test_pipeline_frame_path.py::test_sam2_outputs_stay_tensors_through_the_engine"
"semantic-weights|sap_ros/eval/semantic_metrics.py|s/weights = np.broadcast_to(erp_row_weights(height)\[:, None\], (height, width))/weights = np.ones((height, width))/|test/eval/test_semantic_metrics.py::test_iou_weighs_each_pixel_by_its_area_on_the_sphere"
"class-switch-zero|sap_ros/eval/semantic_metrics.py|s/^                continue$/                self._last_class.pop(int(record.id), None); continue/|test/eval/test_semantic_metrics.py::test_class_switches_count_changes_of_a_tracks_published_class"
"semantic-scored|sap_ros/eval/replay_methods.py|s/if semantic is not None and semantic_gt is not None and out.semantic is not None:/if False:/|test/eval/test_replay_semantic.py::test_scores_and_report_of_a_method_that_publishes_classes"
"class-align|sap_ros/eval/semantic_metrics.py|s/self.identity = tuple(method) == tuple(str(n) for n in gt_names)/self.identity = True/|test/eval/test_replay_semantic.py::test_a_head_with_its_own_class_order_is_scored_by_class_name"
"class-accuracy|sap_ros/eval/semantic_metrics.py|s/right = sum(self._last_class.get(t) == true\[t\] for t in scored)/right = len(scored)/|test/eval/test_semantic_metrics.py::test_class_accuracy_scores_each_track_against_the_class_under_most_of_it"
"head-fold|sap_ros/train/classify.py|s/^        fold_standardization(head, mean, scale)/        pass/|test/train/test_train_classify.py::test_a_head_learns_small_spread_inputs_and_reads_raw_ones_after_folding"
"head-constant-input|sap_ros/train/classify.py|s/torch.full_like(std, float('inf'))/std.clamp(min=floor)/|test/train/test_train_classify.py::test_a_head_learns_small_spread_inputs_and_reads_raw_ones_after_folding"
"head-fp32|sap_ros/engine/class_head.py|s/with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):/with torch.no_grad():/|test/engine/test_class_fusion.py::test_the_head_runs_in_float32_inside_the_frames_autocast"
"oracle-classifier-peak|sap_ros/eval/oracle_classifier.py|s/mask = torch.where(mask.sum(dim=1, keepdim=True) > 0, mask, peak)/pass/|test/eval/test_oracle_classifier.py::test_each_sighting_gets_the_class_under_its_mask"
"synth-floor|sap_ros/synth/semantic.py|s/out\[on_z \& (dz < 0.0)\] = class_id('floor')/out[on_z \& (dz > 0.0)] = class_id('floor')/|test/synth/test_synth_semantic.py::test_an_empty_room_is_floor_below_walls_around_ceiling_above"
"offline-wheelhouse|Makefile|s/^PIP_FROM := .*/PIP_FROM :=/|test/test_offline_install.py"
"offline-torch|Makefile|s/esac; sys_torch=1 ;;/esac; sys_torch=0 ;;/|test/test_offline_install.py"
"offline-bench-only|Makefile|s/^bench-gpu: \$(BENCH_STAMP)/bench-gpu: \$(STAMP)/|test/test_offline_install.py"
"discovery-skip|sap_ros/engine/pipeline.py|s/if results or state.path.may_cover(view, low):/if state.path.may_cover(view, low):/|test/engine/test_pipeline_frame_path.py::test_skipping_the_free_point_read_prompts_and_finds_the_same"
"discovery-reach|sap_ros/engine/frame_path.py|s/reach\[:, w\] = hit\[read\].any(axis=1)/reach[:, w] = hit[read].all(axis=1)/|test/engine/test_pipeline_frame_path.py::test_work_reach_names_exactly_the_views_that_see_a_painted_view"
"discovery-one-read|sap_ros/engine/discovery_filter.py|s/to_device(mask_of, device, torch.long)\]/to_device(0 * mask_of, device, torch.long)]/|test/engine/test_discovery_filter.py::test_device_candidates_are_read_once_per_patch_and_kept_as_on_the_host"
"class-order|sap_ros/io/image_codec.py|s/(('class_id', '<u4'), ('class_score', '<f4'))/(('class_score', '<f4'), ('class_id', '<u4'))/|test/io/test_objects_wire_layout.py"
"class-values|sap_ros/io/image_codec.py|s/for name, _ in _SCALAR_FIELDS\[3:\] + _CLASS_FIELDS:/for name, _ in _SCALAR_FIELDS[3:]:/|test/io/test_objects_wire_layout.py"
"semantic-labels|sap_ros/ros/class_outputs.py|s/labels_to_image_msg(semantic, header)/labels_to_image_msg(result.labels, header)/|test/ros/test_node_classes.py"
"class-names-volatile|sap_ros/ros/class_outputs.py|s/durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)/durability=QoSDurabilityPolicy.VOLATILE)/|test/ros/test_node_classes.py"
"marker-class|sap_ros/ros/conversions.py|s/text=f'{obj.id} {class_caption(obj)}'.rstrip())/text=f'{obj.id}')/|test/ros/test_conversions.py::test_markers_name_the_class_of_classified_objects_only"
"overlay-class|sap_ros/ros/node.py|s/overlay_rgb(rgb, result.labels, result.objects)/overlay_rgb(rgb, result.labels)/|test/ros/test_node_classes.py"
"demo-objects|sap_ros/demo/demo.py|s/(out \/ 'objects.md').write_text(/(out \/ 'objects.txt').write_text(/|test/demo/test_demo.py"
)
for entry in "${mutations[@]}"; do
  IFS='|' read -r name file expr test <<< "$entry"
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  sed -i "$expr" "$file"
  if git diff --quiet -- "$file"; then
    echo "$name: MUTATION DID NOT APPLY ($file)"; continue
  fi
  if timeout 600 nice "$PY" -m pytest -q -x -p no:cacheprovider "$test" > /tmp/mutation_$name.log 2>&1; then
    echo "$name: SURVIVED (tests still pass: $test)"
  else
    echo "$name: killed ($(grep -Eo '[0-9]+ failed' /tmp/mutation_$name.log | head -1 || echo error))"
  fi
  git checkout -q -- "$file"
done
