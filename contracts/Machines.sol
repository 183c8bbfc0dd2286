// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Base.sol";

/// Machines: attestation challenges, registration with an appraised TCB, liveness by heartbeat, retirement
/// (contracts/machines.py). The EVM cannot appraise TEE evidence, so the network's attestation registrar does
/// it off chain with cloister.attest and the genesis policy, and co-signs what it concluded; the contract
/// checks that signature, the challenge the TCB answers, and stores the TCB for anyone to re-appraise.
library Machines {
    string private constant CHALLENGE_DOMAIN = "cloister/machine-challenge/v1";
    string private constant ATTESTATION_TAG = "cloister/evm-attestation/v1";
    bytes16 private constant DIGITS = "0123456789abcdef";

    /// Issue the sender a fresh nonce from the previous block's hash; it replaces any earlier one.
    function challengeMachine(State storage s, uint64 nonce, bytes32 txHash) external {
        bytes20 sender = Base.begin(s, nonce);
        if (!s.providers[sender].exists) revert NotProvider(sender);
        bytes32 fresh = sha256(
            abi.encodePacked(CHALLENGE_DOMAIN, bytes1(0), blockhash(block.number - 1), "sha256:", _hex(txHash))
        );
        s.challenges[sender] = Challenge(true, false, Base.time(), fresh);
        emit MachineChallenged(Base.seq(s), sender, fresh, Base.time() + s.params.challengeTtl);
    }

    function registerMachine(
        State storage s,
        uint64 nonce,
        bytes32 txHash,
        MachineInput calldata input,
        bytes calldata registrarSignature
    ) external {
        bytes20 sender = Base.begin(s, nonce);
        if (!s.providers[sender].exists) revert NotProvider(sender);
        Challenge storage pending = _outstanding(s, sender);
        _checkInput(input);
        bytes32 statement = keccak256(
            abi.encode(ATTESTATION_TAG, address(this), sender, pending.nonce, txHash, keccak256(abi.encode(input)))
        );
        Base.registrarSigned(s, statement, registrarSignature);
        pending.used = true;
        bytes8 id = Base.newId(txHash);
        Machine storage machine = s.machines[id];
        if (machine.provider != bytes20(0)) revert IdTaken(id);
        machine.id = id;
        machine.provider = sender;
        machine.active = true;
        machine.registeredAt = Base.time();
        machine.lastHeartbeat = Base.time();
        machine.loaderSigningKey = input.loaderSigningKey;
        machine.loaderSealingKey = input.loaderSealingKey;
        machine.platform = input.platform;
        machine.region = input.region;
        machine.specs.cpuCores = input.cpuCores;
        machine.specs.memoryGib = input.memoryGib;
        machine.specs.diskGib = input.diskGib;
        for (uint256 i = 0; i < input.gpus.length; i++) {
            machine.specs.gpus.push(input.gpus[i]);
        }
        machine.tcbEvidence = input.tcbEvidence;
        machine.attestationDigest = input.attestationDigest;
        machine.verdict = input.verdict;
        s.machineIds.push(id);
        emit MachineRegistered(
            Base.seq(s), id, sender, input.platform, input.region, input.attestationDigest, input.verdict
        );
    }

    /// Keep a machine live. No event: heartbeats are frequent and the record already shows the latest one.
    function heartbeat(State storage s, uint64 nonce, bytes8 machineId) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.activeMachine(s, machineId, sender).lastHeartbeat = Base.time();
    }

    function retireMachine(State storage s, uint64 nonce, bytes8 machineId) external {
        bytes20 sender = Base.begin(s, nonce);
        Machine storage machine = Base.activeMachine(s, machineId, sender);
        bytes8[] memory working = _workingOn(s, machineId);
        if (working.length > 0) revert MachineWorking(machineId, working);
        machine.active = false;
        emit MachineRetiredEvent(Base.seq(s), machineId, sender);
    }

    /// The sender's unused, unexpired challenge: the only nonce a registering TCB may answer.
    function _outstanding(State storage s, bytes20 sender) private view returns (Challenge storage pending) {
        pending = s.challenges[sender];
        if (!pending.exists || pending.used) revert NoChallenge(pending.used);
        uint64 age = Base.time() - pending.issuedAt;
        if (age > s.params.challengeTtl) revert ChallengeExpired(age, s.params.challengeTtl);
    }

    function _checkInput(MachineInput calldata input) private pure {
        Base.token(input.region, "region");
        Base.token(input.platform, "platform");
        if (input.cpuCores < 1 || input.cpuCores > 1 << 16) revert BadField("specs.cpu_cores");
        if (input.memoryGib < 1 || input.memoryGib > 1 << 24) revert BadField("specs.memory_gib");
        if (input.diskGib > 1 << 32) revert BadField("specs.disk_gib");
        Base.tokens(input.gpus, false, "specs.gpus");
        if (input.tcbEvidence.length == 0 || input.tcbEvidence.length > MAX_TCB_EVIDENCE) {
            revert BadField("tcb_evidence");
        }
        if (input.verdict > 1) revert BadField("verdict");
    }

    /// Orders the machine is assigned to that are ready or running.
    function _workingOn(State storage s, bytes8 machineId) private view returns (bytes8[] memory found) {
        found = new bytes8[](s.busy[machineId]);
        uint256 count;
        for (uint256 i = 0; i < s.orderIds.length && count < found.length; i++) {
            Order storage order = s.orders[s.orderIds[i]];
            bool working = order.state == OrderState.Ready || order.state == OrderState.Running;
            if (working && Base.contains(order.machines, machineId)) found[count++] = order.id;
        }
        assembly {
            mstore(found, count)
        }
    }

    function _hex(bytes32 value) private pure returns (bytes memory text) {
        text = new bytes(64);
        for (uint256 i = 0; i < 32; i++) {
            text[2 * i] = DIGITS[uint8(value[i]) >> 4];
            text[2 * i + 1] = DIGITS[uint8(value[i]) & 0x0f];
        }
    }
}
