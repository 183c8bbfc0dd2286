// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Settlement.sol";

/// Deployments (contracts/deployments.py): replicas publish endpoints, end users prepay credit, the gateway
/// bills tokens, and the owner stops the deployment, paying each machine for the seconds it served. The EVM
/// cannot check the loader's Ed25519 signature of an endpoint, so the attestation registrar checks it off chain
/// with cloister.consensus.endpoint (against the machine's loader key on this chain) and co-signs the endpoint.
library Deployments {
    string private constant ENDPOINT_TAG = "cloister/evm-endpoint/v1";

    /// A replica joins (or moves its URL): once its keys are granted, with the one deployment key, loader-signed.
    function registerEndpoint(
        State storage s,
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        string calldata url,
        bytes32 deploymentKey,
        bytes calldata keySignature,
        bytes calldata registrarSignature
    ) external {
        bytes20 sender = Base.begin(s, nonce);
        if (keySignature.length != 64) revert BadField("key_signature");
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Inference);
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_REPORT, machineId, orderId);
        Base.providedMachine(s, machineId, sender);
        _serving(order);
        _granted(s, order, machineId);
        bytes32 statement = keccak256(
            abi.encode(
                ENDPOINT_TAG,
                address(this),
                orderId,
                machineId,
                keccak256(bytes(url)),
                deploymentKey,
                keccak256(keySignature)
            )
        );
        Base.registrarSigned(s, statement, registrarSignature);
        Endpoint[] storage all = s.endpoints[orderId];
        if (all.length > 0 && all[0].deploymentKey != deploymentKey) {
            revert DeploymentKeyMismatch(orderId, all[0].machineId, all[0].deploymentKey);
        }
        bytes32 key = keccak256(abi.encode(orderId, machineId));
        if (s.endpointSlot[key] == 0) {
            all.push(Endpoint(machineId, url, deploymentKey, keySignature, Base.time(), NONE));
            s.endpointSlot[key] = all.length;
        } else {
            Endpoint storage existing = all[s.endpointSlot[key] - 1];
            (existing.url, existing.keySignature, existing.removedAt) = (url, keySignature, NONE);
        }
        if (order.state != OrderState.Running) {
            order.state = OrderState.Running;
            if (order.startedAt == NONE) order.startedAt = Base.time();
        }
        emit EndpointRegistered(Base.seq(s), orderId, machineId, url, deploymentKey);
    }

    /// The owner ends the deployment: every machine's endpoint is removed and its seconds paid.
    function stopDeployment(State storage s, uint64 nonce, bytes8 orderId) external {
        bytes20 sender = Base.begin(s, nonce);
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Inference);
        if (order.owner != sender) revert NotOrderOwner(TO_STOP, orderId, order.owner);
        if (order.state != OrderState.Ready && order.state != OrderState.Running) {
            revert WrongOrderState(orderId, order.state, WHEN_STOPPING);
        }
        Settlement.Share[] memory current = new Settlement.Share[](order.machines.length);
        for (uint256 i = 0; i < current.length; i++) {
            bytes8 machineId = order.machines[i];
            bytes8 offerId = Base.slot(s, orderId, machineId).computeOffer;
            current[i] = Settlement.Share(offerId, Settlement.leave(s, order, machineId));
        }
        Settlement.settle(s, order, current, true);
        Settlement.close(s, order, OrderState.Completed);
        emit DeploymentStopped(Base.seq(s), orderId, order.usageSeconds);
    }

    function depositCredit(State storage s, uint64 nonce, bytes8 orderId, uint64 amount) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.amount(amount, "amount");
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Inference);
        if (order.state != OrderState.Ready && order.state != OrderState.Running) {
            revert WrongOrderState(orderId, order.state, WHEN_CREDITING);
        }
        Credit storage credit = s.credits[keccak256(abi.encode(orderId, sender))];
        if (uint256(credit.balance) + amount > MAX_AMOUNT) revert CreditOverflow(orderId, sender);
        Base.debit(s, sender, amount, FOR_CREDIT);
        (credit.balance, credit.updatedAt) = (credit.balance + amount, Base.time());
        emit CreditDeposited(Base.seq(s), orderId, sender, amount, credit.balance);
    }

    /// Unspent credit comes back once the deployment is over (while it runs, the gateway may still bill it).
    function withdrawCredit(State storage s, uint64 nonce, bytes8 orderId, uint64 amount) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.amount(amount, "amount");
        Order storage order = Base.orderOfKind(s, orderId, OrderKind.Inference);
        if (order.state < OrderState.Completed) revert WrongOrderState(orderId, order.state, WHEN_WITHDRAWING);
        Credit storage credit = s.credits[keccak256(abi.encode(orderId, sender))];
        if (amount > credit.balance) revert CreditTooLow(orderId, sender, amount, credit.balance);
        (credit.balance, credit.updatedAt) = (credit.balance - amount, Base.time());
        Base.credit(s, sender, amount);
        emit CreditWithdrawn(Base.seq(s), orderId, sender, amount, credit.balance);
    }

    /// Charge a user's credit for tokens (capped at what is left): revenue shares first, the rest to the owner.
    function settleUsage(State storage s, uint64 nonce, bytes8 orderId, bytes20 user, uint64 tokens, bytes32 receipts)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        Base.amount(tokens, "tokens");
        Order storage order = Base.gatewayOrder(s, orderId, sender);
        Credit storage credit = s.credits[keccak256(abi.encode(orderId, user))];
        uint256 charge = uint256(tokens) * order.pricePer1kTokens / 1000;
        bool capped = charge > credit.balance;
        if (capped) charge = credit.balance;
        bytes8[] memory content = Base.contentOffers(order);
        uint256 shared;
        for (uint256 i = 0; i < content.length; i++) {
            Offer storage offer = s.offers[content[i]];
            if (offer.pricing.model != PricingModel.RevenueShare) continue;
            uint256 share = charge * offer.pricing.shareBps / MAX_SHARE_BPS;
            if (share == 0) continue;
            shared += share;
            Base.credit(s, offer.owner, share);
            emit RevenueShared(Base.seq(s), orderId, offer.owner, uint64(share), offer.id);
        }
        if (charge > shared) {
            Base.credit(s, order.owner, charge - shared);
            emit UsagePaid(Base.seq(s), orderId, order.owner, uint64(charge - shared));
        }
        credit.balance -= uint64(charge);
        credit.spent += uint64(charge);
        credit.updatedAt = Base.time();
        emit UsageSettled(Base.seq(s), orderId, user, tokens, uint64(charge), capped, receipts);
    }

    function _serving(Order storage order) private view {
        if (order.state != OrderState.Ready && order.state != OrderState.Running) {
            revert WrongOrderState(order.id, order.state, WHEN_SERVING);
        }
    }

    /// Revert unless every content offer granted its key to the machine.
    function _granted(State storage s, Order storage order, bytes8 machineId) private view {
        Grant[] storage grants = s.grants[order.id];
        uint256 count;
        for (uint256 i = 0; i < grants.length; i++) {
            if (grants[i].machineId == machineId) count++;
        }
        if (count != Base.contentOffers(order).length) revert GrantsMissing(order.id, machineId);
    }
}
