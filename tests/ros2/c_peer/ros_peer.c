/* A C Cyclone DDS program standing in for a ROS 2 node on rmw_cyclonedds_cpp (Debian's libddsc 0.10,
 * the series ROS 2 Humble/Jazzy ship): types compiled with `idlc -t` (no type information, matched by
 * name), XCDR1 data representation, ROS 2's topic names and QoS. It reads the JointState and Image the
 * Python side publishes and publishes Float64MultiArray commands and a String instruction back.
 * Prints one line per observation; bounded to ~10 s.  Usage: ros_peer DOMAIN_ID */
#include <stdio.h>
#include <stdlib.h>
#include "dds/dds.h"
#include "ros_types.h"

static dds_qos_t *qos(dds_reliability_kind_t rel, int depth)
{
  dds_qos_t *q = dds_create_qos();
  dds_data_representation_id_t xcdr1 = DDS_DATA_REPRESENTATION_XCDR1;
  dds_qset_reliability(q, rel, DDS_MSECS(100));
  dds_qset_history(q, DDS_HISTORY_KEEP_LAST, depth);
  dds_qset_data_representation(q, 1, &xcdr1);
  return q;
}

int main(int argc, char **argv)
{
  if (argc < 2) return 2;
  dds_entity_t pp = dds_create_participant((dds_domainid_t) atoi(argv[1]), NULL, NULL);
  if (pp < 0) { fprintf(stderr, "participant: %s\n", dds_strretcode(pp)); return 1; }
  dds_qos_t *sensor = qos(DDS_RELIABILITY_BEST_EFFORT, 5), *deflt = qos(DDS_RELIABILITY_RELIABLE, 10);
  dds_entity_t js_rd = dds_create_reader(pp, dds_create_topic(pp, &sensor_msgs_msg_dds__JointState__desc,
      "rt/joint_states", NULL, NULL), sensor, NULL);
  dds_entity_t img_rd = dds_create_reader(pp, dds_create_topic(pp, &sensor_msgs_msg_dds__Image__desc,
      "rt/camera/image_raw", NULL, NULL), sensor, NULL);
  dds_entity_t cmd_wr = dds_create_writer(pp, dds_create_topic(pp, &std_msgs_msg_dds__Float64MultiArray__desc,
      "rt/arm/commands", NULL, NULL), deflt, NULL);
  dds_entity_t str_wr = dds_create_writer(pp, dds_create_topic(pp, &std_msgs_msg_dds__String__desc,
      "rt/fastvla_bridge/instruction", NULL, NULL), deflt, NULL);
  if (js_rd < 0 || img_rd < 0 || cmd_wr < 0 || str_wr < 0) { fprintf(stderr, "endpoint creation failed\n"); return 1; }

  double values[3] = {1.0, 2.0, 3.0};
  std_msgs_msg_dds__MultiArrayDimension_ dim = {.label = "action", .size = 3, .stride = 3};
  std_msgs_msg_dds__Float64MultiArray_ cmd = {
    .layout = {.dim = {._maximum = 1, ._length = 1, ._buffer = &dim, ._release = false}, .data_offset = 0},
    .data = {._maximum = 3, ._length = 3, ._buffer = values, ._release = false}};
  std_msgs_msg_dds__String_ instr = {.data = "open the drawer"};
  int got_js = 0, got_img = 0;
  for (int i = 0; i < 100 && !(got_js && got_img && i > 20); i++) {
    void *samples[1] = {NULL};
    dds_sample_info_t info[1];
    int n = dds_take(js_rd, samples, info, 1, 1);
    if (n > 0 && info[0].valid_data && !got_js) {
      sensor_msgs_msg_dds__JointState_ *js = samples[0];
      printf("JS names=%u first=%s pos=%g,%g stamp=%d.%u frame=%s\n", js->name._length, js->name._buffer[0],
             js->position._buffer[0], js->position._buffer[1], js->header.stamp.sec, js->header.stamp.nanosec,
             js->header.frame_id);
      got_js = 1;
    }
    if (n > 0) dds_return_loan(js_rd, samples, n);
    samples[0] = NULL;
    n = dds_take(img_rd, samples, info, 1, 1);
    if (n > 0 && info[0].valid_data && !got_img) {
      sensor_msgs_msg_dds__Image_ *im = samples[0];
      unsigned sum = 0;
      for (uint32_t k = 0; k < im->data._length; k++) sum += im->data._buffer[k];
      printf("IMG %ux%u %s step=%u bytes=%u sum=%u\n", im->width, im->height, im->encoding, im->step,
             im->data._length, sum);
      got_img = 1;
    }
    if (n > 0) dds_return_loan(img_rd, samples, n);
    dds_write(cmd_wr, &cmd);
    if (i % 10 == 5) dds_write(str_wr, &instr);
    fflush(stdout);
    dds_sleepfor(DDS_MSECS(100));
  }
  printf("DONE js=%d img=%d\n", got_js, got_img);
  dds_delete(pp);
  return (got_js && got_img) ? 0 : 3;
}
