/* The whole capsule.v1 API surface in one table. Methods whose handler is NULL answer
 * UNIMPLEMENTED (after authorization), so later work only fills in handlers. Each method names the
 * least role that may call it (R reader, O operator, A admin; see auth.c), and docs/architecture.md
 * (Security) shows the same table: change both together. */
#include <string.h>

#include "capsule/v1/images.pb-c.h"
#include "capsule/v1/system.pb-c.h"
#include "capsule/v1/updates.pb-c.h"
#include "capsule/v1/volumes.pb-c.h"
#include "capsule/v1/workloads.pb-c.h"
#include "common/cleanup.h"
#include "images/images.h"
#include "serve.h"
#include "volume/service.h"

#define R SERVE_NEEDS(SERVE_ROLE_READER)
#define O SERVE_NEEDS(SERVE_ROLE_OPERATOR)
#define A SERVE_NEEDS(SERVE_ROLE_ADMIN)
#define D(x) &capsule__v1__##x##__descriptor

int serve_register_services(struct serve_ctx *ctx, struct rpc_server *srv, struct cap_error *err)
{
        const struct rpc_method methods[] = {
            /* Workloads */
            {"/capsule.v1.Workloads/Apply", RPC_UNARY, D(apply_request), D(apply_response), O,
             .unary = workloads_apply},
            {"/capsule.v1.Workloads/Get", RPC_UNARY, D(get_request), D(get_response), R,
             .unary = workloads_get},
            {"/capsule.v1.Workloads/List", RPC_UNARY, D(list_request), D(list_response), R,
             .unary = workloads_list},
            {"/capsule.v1.Workloads/Delete", RPC_UNARY, D(delete_request), D(delete_response),
             O | RPC_METHOD_BLOCKING, .unary = workloads_delete},
            {"/capsule.v1.Workloads/Restart", RPC_UNARY, D(restart_request), D(restart_response), O,
             .unary = workloads_restart},
            {"/capsule.v1.Workloads/Logs", RPC_SERVER_STREAM, D(logs_request), D(log_chunk), R,
             .stream = workloads_logs},
            {"/capsule.v1.Workloads/Exec", RPC_BIDI, D(exec_request), D(exec_response), O,
             .stream = workloads_exec},
            {"/capsule.v1.Workloads/Debug", RPC_BIDI, D(exec_request), D(exec_response), A,
             .stream = workloads_debug},
            /* Volumes */
            {"/capsule.v1.Volumes/Create", RPC_UNARY, D(volume_create_request),
             D(volume_create_response), O | RPC_METHOD_BLOCKING, .unary = volumes_rpc_create},
            {"/capsule.v1.Volumes/List", RPC_UNARY, D(volume_list_request), D(volume_list_response),
             R, .unary = volumes_rpc_list},
            {"/capsule.v1.Volumes/Delete", RPC_UNARY, D(volume_delete_request),
             D(volume_delete_response), O, .unary = volumes_rpc_delete},
            {"/capsule.v1.Volumes/Resize", RPC_UNARY, D(volume_resize_request),
             D(volume_resize_response), O | RPC_METHOD_BLOCKING, .unary = volumes_rpc_resize},
            {"/capsule.v1.Volumes/Backup", RPC_SERVER_STREAM, D(volume_backup_request),
             D(volume_backup_chunk), O, .stream = volumes_rpc_backup},
            {"/capsule.v1.Volumes/Restore", RPC_CLIENT_STREAM, D(volume_restore_request),
             D(volume_restore_response), O, .stream = volumes_rpc_restore},
            /* Images */
            {"/capsule.v1.Images/Push", RPC_CLIENT_STREAM, D(image_push_request),
             D(image_push_response), O, .stream = images_push},
            {"/capsule.v1.Images/Pull", RPC_SERVER_STREAM, D(image_pull_request), D(image_pull_response),
             O | RPC_METHOD_BLOCKING, .stream = images_pull},
            {"/capsule.v1.Images/List", RPC_UNARY, D(image_list_request), D(image_list_response), R,
             .unary = images_list},
            {"/capsule.v1.Images/Delete", RPC_UNARY, D(image_delete_request),
             D(image_delete_response), O, .unary = images_delete},
            /* System */
            {"/capsule.v1.System/Version", RPC_UNARY, D(version_request), D(version_response), R,
             .unary = system_version},
            {"/capsule.v1.System/Health", RPC_UNARY, D(health_request), D(health_response), R,
             .unary = system_health},
            {"/capsule.v1.System/Reboot", RPC_UNARY, D(reboot_request), D(reboot_response), A,
             .unary = system_reboot},
            {"/capsule.v1.System/Dmesg", RPC_SERVER_STREAM, D(dmesg_request), D(dmesg_line), O,
             .stream = system_dmesg},
            {"/capsule.v1.System/Events", RPC_SERVER_STREAM, D(events_request), D(event), R,
             .stream = system_events},
            {"/capsule.v1.System/ApplyMachineConfig", RPC_UNARY, D(apply_machine_config_request),
             D(apply_machine_config_response), A | RPC_METHOD_BLOCKING,
             .unary = system_apply_machine_config},
            {"/capsule.v1.System/Metrics", RPC_UNARY, D(metrics_request), D(metrics_response), R,
             .unary = system_metrics},
            /* Updates */
            {"/capsule.v1.Updates/Push", RPC_CLIENT_STREAM, D(update_push_request),
             D(update_push_response), A, .stream = updates_push},
            {"/capsule.v1.Updates/Status", RPC_UNARY, D(update_status_request),
             D(update_status_response), R, .unary = updates_status},
            {"/capsule.v1.Updates/Commit", RPC_UNARY, D(update_commit_request),
             D(update_commit_response), A | RPC_METHOD_BLOCKING, .unary = updates_commit},
            {"/capsule.v1.Updates/Rollback", RPC_UNARY, D(update_rollback_request),
             D(update_rollback_response), A | RPC_METHOD_BLOCKING, .unary = updates_rollback},
        };
        /* images/ and volume/ take their own context, not the serve_ctx */
        struct rpc_method with_ctx[ARRAY_SIZE(methods)];
        for (size_t i = 0; i < ARRAY_SIZE(methods); i++) {
                with_ctx[i] = methods[i];
                with_ctx[i].userdata = ctx;
                if (strncmp(methods[i].path, "/capsule.v1.Images/", 19) == 0)
                        with_ctx[i].userdata = &ctx->images;
                else if (strncmp(methods[i].path, "/capsule.v1.Volumes/", 20) == 0 &&
                         methods[i].stream == NULL) /* Backup, Restore: the serve_ctx */
                        with_ctx[i].userdata = ctx->volumes;
        }
        return rpc_server_add_methods(srv, with_ctx, ARRAY_SIZE(with_ctx), err);
}
