// The local Alibaba Cloud region tests use for cloud disk volumes: its parts are in ecs-cloud/.
export * from './ecs-cloud/index.js';
