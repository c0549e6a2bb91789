"""Published facts about the datasets that commands need without opening any file."""

#: nsdgeneral voxel counts per NSD subject (MindEye's preprocessing).
NSD_VOXELS: dict[int, int] = {1: 15724, 2: 14278, 3: 15226, 4: 13153, 5: 13039, 6: 17907, 7: 12682, 8: 14386}
